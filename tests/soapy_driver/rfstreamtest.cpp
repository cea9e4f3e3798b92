// rfstreamtest: a SoapySDR driver module that behaves like a small USB SDR, for rfstream's tests.
//
// It streams synthetic IQ (a tone plus noise) paced by the wall clock: samples "arrive" as time
// passes, and a reader that falls further behind than the device buffer gets SOAPY_SDR_OVERFLOW
// and loses them, like real hardware. Every read carries hardware time (SOAPY_SDR_HAS_TIME)
// derived from the sample index, so a jump in time is exactly the number of samples lost.
//
// Device args (all optional):
//   serial=0001|0002   which of the two boards find()/make() match; both when absent
//   control=PATH       a file polled while streaming and read by find/make: "disconnect" unplugs
//                      the device (reads fail with SOAPY_SDR_STREAM_ERROR, find/make see nothing),
//                      anything else (e.g. "ok") plugs it back in
//   epoch_time=0       hardware time counts from 0 at make() instead of the UNIX epoch
//   hw_time=0          reads carry no time (no SOAPY_SDR_HAS_TIME), like many cheap dongles
//   buffer_ms=500      how far a reader may fall behind before the device overflows
//   mtu=16384          largest read, in samples
//   tone_offset_hz=100e3, tone_amp=0.5, noise_amp=0.01
//   inject=...         same as writeSetting("inject", ...) right after make()
// Runtime fault injection, writeSetting("inject", VALUE):
//   overflow:N[:S]     the next N reads return SOAPY_SDR_OVERFLOW, each losing S samples (4096)
//   timeout:N          the next N reads wait out their timeout and return SOAPY_SDR_TIMEOUT
//   disconnect         this device's stream fails with SOAPY_SDR_STREAM_ERROR from now on
#include <SoapySDR/Device.hpp>
#include <SoapySDR/Formats.hpp>
#include <SoapySDR/Registry.hpp>
#include <SoapySDR/Time.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <complex>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

using Clock = std::chrono::steady_clock;

const char *kDriver = "rfstreamtest";

std::string argOr(const SoapySDR::Kwargs &args, const std::string &key, const std::string &fallback) {
    auto it = args.find(key);
    return it == args.end() ? fallback : it->second;
}

double numArg(const SoapySDR::Kwargs &args, const std::string &key, double fallback) {
    auto it = args.find(key);
    return it == args.end() ? fallback : std::stod(it->second);
}

// The control file says whether the device is plugged in; no file or no path means it is.
bool unplugged(const std::string &path) {
    if (path.empty()) return false;
    std::ifstream in(path);
    std::string word;
    in >> word;
    return word == "disconnect";
}

long long epochNowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct Stream {
    bool cf32 = true;
};

class TestDevice : public SoapySDR::Device {
  public:
    explicit TestDevice(const SoapySDR::Kwargs &args)
        : _serial(argOr(args, "serial", "0001")),
          _control(argOr(args, "control", "")),
          _bufferMs(numArg(args, "buffer_ms", 500.0)),
          _mtu(static_cast<size_t>(numArg(args, "mtu", 16384))),
          _toneOffset(numArg(args, "tone_offset_hz", 100e3)),
          _toneAmp(numArg(args, "tone_amp", 0.5)),
          _noiseAmp(numArg(args, "noise_amp", 0.01)),
          _made(Clock::now()),
          _timeBaseNs(argOr(args, "epoch_time", "1") == "0" ? 0 : epochNowNs()),
          _readTime(argOr(args, "hw_time", "1") != "0") {
        if (args.count("inject")) writeSetting("inject", args.at("inject"));
    }

    // --- identification ---------------------------------------------------------------
    std::string getDriverKey() const override { return kDriver; }
    std::string getHardwareKey() const override { return "rfstreamtest-" + _serial; }
    SoapySDR::Kwargs getHardwareInfo() const override { return {{"serial", _serial}}; }
    size_t getNumChannels(const int dir) const override { return dir == SOAPY_SDR_RX ? 1 : 0; }

    // --- stream -------------------------------------------------------------------------
    std::vector<std::string> getStreamFormats(const int, const size_t) const override {
        return {SOAPY_SDR_CF32, SOAPY_SDR_CS16};
    }
    std::string getNativeStreamFormat(const int, const size_t, double &fullScale) const override {
        fullScale = 32767;
        return SOAPY_SDR_CS16;
    }
    SoapySDR::Stream *setupStream(const int dir, const std::string &format, const std::vector<size_t> &channels,
                                  const SoapySDR::Kwargs &) override {
        if (dir != SOAPY_SDR_RX) throw std::runtime_error("rfstreamtest: receive only");
        if (format != SOAPY_SDR_CF32 && format != SOAPY_SDR_CS16)
            throw std::runtime_error("rfstreamtest: unsupported format " + format);
        if (channels.size() > 1 || (channels.size() == 1 && channels[0] != 0))
            throw std::runtime_error("rfstreamtest: only channel 0");
        auto *s = new Stream;
        s->cf32 = format == SOAPY_SDR_CF32;
        return reinterpret_cast<SoapySDR::Stream *>(s);
    }
    void closeStream(SoapySDR::Stream *stream) override { delete reinterpret_cast<Stream *>(stream); }
    size_t getStreamMTU(SoapySDR::Stream *) const override { return _mtu; }

    int activateStream(SoapySDR::Stream *, const int, const long long, const size_t) override {
        std::lock_guard<std::mutex> lock(_mutex);
        _active = true;
        _activated = Clock::now();
        _activatedNs = hardwareNowNs();
        _readPos = 0;
        return 0;
    }
    int deactivateStream(SoapySDR::Stream *, const int, const long long) override {
        std::lock_guard<std::mutex> lock(_mutex);
        _active = false;
        return 0;
    }

    int readStream(SoapySDR::Stream *handle, void *const *buffs, const size_t numElems, int &flags,
                   long long &timeNs, const long timeoutUs) override {
        flags = 0;
        const auto deadline = Clock::now() + std::chrono::microseconds(timeoutUs);
        std::unique_lock<std::mutex> lock(_mutex);
        if (_lost || polledUnplugged()) {
            _lost = true;
            return SOAPY_SDR_STREAM_ERROR;
        }
        if (!_active) {
            lock.unlock();
            std::this_thread::sleep_until(deadline);
            return SOAPY_SDR_TIMEOUT;
        }
        if (_injectTimeouts > 0) {
            --_injectTimeouts;
            lock.unlock();
            std::this_thread::sleep_until(deadline);
            return SOAPY_SDR_TIMEOUT;
        }
        if (_injectOverflows > 0) {
            --_injectOverflows;
            _readPos += _injectDrop;  // these samples never reach the host: time jumps
            return SOAPY_SDR_OVERFLOW;
        }
        const double rate = _rate;
        const long long capacity = static_cast<long long>(rate * _bufferMs / 1000.0);
        const size_t want = std::min(numElems, _mtu);
        // Wait until a full packet has arrived, as a USB transfer would.
        for (;;) {
            const long long arrived = arrivedSamples();
            if (arrived - _readPos > capacity) {
                _readPos = arrived;  // the device buffer wrapped: everything unread is gone
                return SOAPY_SDR_OVERFLOW;
            }
            if (arrived - _readPos >= static_cast<long long>(want)) break;
            const auto ready = _activated + std::chrono::nanoseconds(static_cast<long long>(
                                                std::ceil((_readPos + want) * 1e9 / rate)));
            if (ready > deadline) {
                lock.unlock();
                std::this_thread::sleep_until(deadline);
                return SOAPY_SDR_TIMEOUT;
            }
            lock.unlock();
            std::this_thread::sleep_until(ready);
            lock.lock();
            if (_lost || polledUnplugged()) {
                _lost = true;
                return SOAPY_SDR_STREAM_ERROR;
            }
        }
        const long long first = _readPos;
        _readPos += want;
        flags = _readTime ? SOAPY_SDR_HAS_TIME : 0;
        timeNs = _activatedNs + SoapySDR::ticksToTimeNs(first, rate);
        const bool cf32 = reinterpret_cast<Stream *>(handle)->cf32;
        const double freq = _toneOffset;
        const double amp = _toneAmp, noise = _noiseAmp;
        lock.unlock();
        synthesize(buffs[0], cf32, first, want, rate, freq, amp, noise);
        return static_cast<int>(want);
    }

    // --- antennas, gain, frequency, rate, bandwidth -------------------------------------
    std::vector<std::string> listAntennas(const int, const size_t) const override { return {"RX", "TEST"}; }
    void setAntenna(const int, const size_t, const std::string &name) override {
        if (name != "RX" && name != "TEST") throw std::runtime_error("rfstreamtest: no antenna " + name);
        _antenna = name;
    }
    std::string getAntenna(const int, const size_t) const override { return _antenna; }

    std::vector<std::string> listGains(const int, const size_t) const override { return {"LNA"}; }
    bool hasGainMode(const int, const size_t) const override { return true; }
    void setGainMode(const int, const size_t, const bool automatic) override { _agc = automatic; }
    bool getGainMode(const int, const size_t) const override { return _agc; }
    void setGain(const int, const size_t, const double value) override { _gain = value; }
    void setGain(const int, const size_t, const std::string &, const double value) override { _gain = value; }
    double getGain(const int, const size_t) const override { return _gain; }
    double getGain(const int, const size_t, const std::string &) const override { return _gain; }
    SoapySDR::Range getGainRange(const int, const size_t) const override { return {0.0, 49.6, 0.0}; }
    SoapySDR::Range getGainRange(const int, const size_t, const std::string &) const override {
        return {0.0, 49.6, 0.0};
    }

    void setFrequency(const int, const size_t, const double frequency, const SoapySDR::Kwargs &) override {
        _freq = frequency;
    }
    void setFrequency(const int, const size_t, const std::string &, const double frequency,
                      const SoapySDR::Kwargs &) override {
        _freq = frequency;
    }
    double getFrequency(const int, const size_t) const override { return _freq; }
    double getFrequency(const int, const size_t, const std::string &) const override { return _freq; }
    std::vector<std::string> listFrequencies(const int, const size_t) const override { return {"RF"}; }
    SoapySDR::RangeList getFrequencyRange(const int, const size_t) const override { return {{24e6, 1766e6}}; }
    SoapySDR::RangeList getFrequencyRange(const int, const size_t, const std::string &) const override {
        return {{24e6, 1766e6}};
    }

    void setSampleRate(const int, const size_t, const double rate) override {
        if (!(rate >= 250e3 && rate <= 3.2e6) && !(rate >= 5e6 && rate <= 20e6))
            throw std::runtime_error("rfstreamtest: unsupported sample rate");
        std::lock_guard<std::mutex> lock(_mutex);
        _rate = rate;
    }
    double getSampleRate(const int, const size_t) const override { return _rate; }
    std::vector<double> listSampleRates(const int, const size_t) const override {
        return {250e3, 1e6, 2e6, 2.4e6, 3.2e6, 5e6, 10e6, 20e6};
    }
    SoapySDR::RangeList getSampleRateRange(const int, const size_t) const override {
        return {{250e3, 3.2e6}, {5e6, 20e6}};
    }
    void setBandwidth(const int, const size_t, const double bw) override { _bandwidth = bw; }
    double getBandwidth(const int, const size_t) const override { return _bandwidth; }
    SoapySDR::RangeList getBandwidthRange(const int, const size_t) const override { return {{200e3, 20e6}}; }

    // --- time ---------------------------------------------------------------------------
    bool hasHardwareTime(const std::string &what) const override { return what.empty(); }
    long long getHardwareTime(const std::string &) const override { return hardwareNowNs(); }

    // --- settings: fault injection -------------------------------------------------------
    void writeSetting(const std::string &key, const std::string &value) override {
        if (key != "inject") throw std::runtime_error("rfstreamtest: unknown setting " + key);
        std::lock_guard<std::mutex> lock(_mutex);
        const auto colon = value.find(':');
        const std::string what = value.substr(0, colon);
        const std::string rest = colon == std::string::npos ? "" : value.substr(colon + 1);
        if (what == "overflow") {
            const auto colon2 = rest.find(':');
            _injectOverflows = rest.empty() ? 1 : std::stoi(rest.substr(0, colon2));
            _injectDrop = colon2 == std::string::npos ? 4096 : std::stoll(rest.substr(colon2 + 1));
        } else if (what == "timeout") {
            _injectTimeouts = rest.empty() ? 1 : std::stoi(rest);
        } else if (what == "disconnect") {
            _lost = true;
        } else {
            throw std::runtime_error("rfstreamtest: unknown injection " + value);
        }
    }
    std::string readSetting(const std::string &key) const override {
        if (key == "read_pos") return std::to_string(_readPos);
        return "";
    }

  private:
    long long hardwareNowNs() const {
        return _timeBaseNs + std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - _made).count();
    }
    long long arrivedSamples() const {
        const double elapsed = std::chrono::duration<double>(Clock::now() - _activated).count();
        return static_cast<long long>(elapsed * _rate);
    }
    // Poll the control file at most every 20 ms; it is the "USB cable".
    bool polledUnplugged() {
        if (_control.empty()) return false;
        const auto now = Clock::now();
        if (now - _lastPoll > std::chrono::milliseconds(20)) {
            _lastPoll = now;
            _unplugged = unplugged(_control);
        }
        return _unplugged;
    }

    // A tone at tone_offset_hz from the centre plus uniform noise; phase follows the absolute
    // sample index, so it stays continuous across reads and jumps across lost samples.
    void synthesize(void *out, bool cf32, long long first, size_t n, double rate, double freq, double amp,
                    double noise) {
        const double w = 2.0 * M_PI * freq / rate;
        std::complex<double> rot = std::polar(amp, std::fmod(w * static_cast<double>(first), 2.0 * M_PI));
        const std::complex<double> step = std::polar(1.0, w);
        auto *f = static_cast<float *>(out);
        auto *s = static_cast<int16_t *>(out);
        for (size_t i = 0; i < n; ++i) {
            const double nr = noise * uniform(), ni = noise * uniform();
            const double re = rot.real() + nr, im = rot.imag() + ni;
            if (cf32) {
                f[2 * i] = static_cast<float>(re);
                f[2 * i + 1] = static_cast<float>(im);
            } else {
                s[2 * i] = static_cast<int16_t>(std::lround(std::clamp(re, -1.0, 1.0) * 32767.0));
                s[2 * i + 1] = static_cast<int16_t>(std::lround(std::clamp(im, -1.0, 1.0) * 32767.0));
            }
            rot *= step;
            if ((i & 1023) == 1023) rot *= amp / std::abs(rot);  // keep the amplitude from drifting
        }
    }
    double uniform() {  // xorshift64: cheap, and good enough for a noise floor
        _rng ^= _rng << 13;
        _rng ^= _rng >> 7;
        _rng ^= _rng << 17;
        return static_cast<double>(_rng >> 11) * (2.0 / 9007199254740992.0) - 1.0;
    }

    const std::string _serial, _control;
    const double _bufferMs;
    const size_t _mtu;
    const double _toneOffset, _toneAmp, _noiseAmp;
    const Clock::time_point _made;
    const long long _timeBaseNs;
    const bool _readTime;

    mutable std::mutex _mutex;
    double _rate = 2e6, _freq = 100e6, _gain = 20.0, _bandwidth = 2e6;
    bool _agc = false;
    std::string _antenna = "RX";
    bool _active = false, _lost = false, _unplugged = false;
    Clock::time_point _activated{}, _lastPoll{};
    long long _activatedNs = 0, _readPos = 0;
    int _injectOverflows = 0, _injectTimeouts = 0;
    long long _injectDrop = 4096;
    uint64_t _rng = 0x9E3779B97F4A7C15ull;
};

// Two identical boards, serials 0001 and 0002, so listings and serial matching have something to do.
SoapySDR::KwargsList findTestDevice(const SoapySDR::Kwargs &args) {
    if (unplugged(argOr(args, "control", ""))) return {};
    SoapySDR::KwargsList found;
    for (const std::string serial : {"0001", "0002"}) {
        if (args.count("serial") && args.at("serial") != serial) continue;
        found.push_back({{"driver", kDriver}, {"label", "rfstream test SDR " + serial}, {"serial", serial}});
    }
    return found;
}

SoapySDR::Device *makeTestDevice(const SoapySDR::Kwargs &args) {
    if (findTestDevice(args).empty()) throw std::runtime_error("rfstreamtest: no such device (unplugged?)");
    return new TestDevice(args);
}

SoapySDR::Registry registerTestDevice(kDriver, &findTestDevice, &makeTestDevice, SOAPY_SDR_ABI_VERSION);

}  // namespace
