"""rfstream on the web: a live viewer (``rfstream view``) and detection as a service (``rfstream serve``).

- ``feed.py``     one ZeroMQ subscriber per endpoint: decodes the wire protocol (tolerant of schema
                  versions 1 and 2), keeps the live tracks, the latest health and the last minutes of
                  waterfall and detections, and hands them to every browser without ever waiting on one.
- ``http.py``     what both servers share: JSON errors (never a traceback), bearer-token auth, the
                  listen policy (rfstream/sinks/endpoints.py), Prometheus text, the serve loop.
- ``viewer.py``   ``rfstream view``: the page, its WebSocket, ``/api/health``, ``/api/tracks``.
- ``service.py``  ``rfstream serve``: ``POST /api/detect`` through rfstream.runner.assemble.
- ``static/``     the page (plain HTML, CSS and one script; no build step, no CDN).
- ``view_cli.py``, ``serve_cli.py``  the verbs' options; they import the modules above only when
                  the verb runs, so parsing any command line never imports aiohttp.

Both need the ``web`` extra (aiohttp); without it the verbs say how to install it.
"""
