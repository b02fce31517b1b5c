#pragma once
// optical<Readout, Camera, Encoder, Medium>: a simulated optical processing
// unit as a projection device, so dfa<optical<...>> and drtp<optical<...>>
// train through it.
//
// One projection of a batch x (n x in):
//   1. the encoder turns each row into F binary frames and weights;
//      all-zero frames are skipped (nothing to display);
//   2. the medium gives the field E = R x of every frame (optical/medium.hpp:
//      stored, or regenerated inside the product);
//   3. the readout exposes the camera (exposures_per_frame per frame) and
//      decodes one row per frame;
//   4. row r of y is the weighted sum of its frames' rows, then the readout's
//      per-sample scaling (intensity only).
// Before the first projection the camera is calibrated on that batch (the
// holographic readout also measures |r|^2); those exposures are counted.
//
// The parts live in their own headers: the frames (frame_batch.hpp), the
// medium (medium.hpp), the readout, the camera, and the settings and
// counters (settings.hpp); this class runs them on the threads, applies the
// imperfections' schedules and keeps the state a checkpoint needs.
//
// Frame accounting: one frame is one camera exposure; a holographic
// projection of a sample with ternary encoding costs up to 2 patterns x 2
// exposures = 4 frames, an intensity one 2. The modelled device time is
// frames / frame_rate: a real OPU takes one frame per exposure whatever the
// matrix size.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lightloop/core/concepts.hpp"
#include "lightloop/core/describe.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/parallel.hpp"
#include "lightloop/core/random.hpp"
#include "lightloop/core/seeded_matrix.hpp"
#include "lightloop/core/simd.hpp"
#include "lightloop/core/tensor.hpp"
#include "lightloop/io/state.hpp"
#include "lightloop/projection/optical/camera.hpp"
#include "lightloop/projection/optical/encoder.hpp"
#include "lightloop/projection/optical/frame_batch.hpp"
#include "lightloop/projection/optical/medium.hpp"
#include "lightloop/projection/optical/readout.hpp"
#include "lightloop/projection/optical/settings.hpp"
#include "lightloop/projection/optical/transmission_matrix.hpp"

namespace lightloop {

template <class Readout = holographic_readout<off_axis_reference>, class Camera = camera,
          class Encoder = ternary_encoder, class Medium = transmission_matrix>
requires camera_model<Camera> && optical_encoder<Encoder> && scattering_medium<Medium>
class optical {
public:
    using readout_type = Readout;
    using camera_type = Camera;
    using encoder_type = Encoder;
    using medium_type = Medium;

    optical() = default;
    explicit optical(Readout readout, Camera cam = {}, Encoder encoder = {},
                     optical_settings settings = {})
      : readout_(std::move(readout))
      , camera_(std::move(cam))
      , encoder_(std::move(encoder))
      , settings_(settings) {
        check_settings();
    }
    explicit optical(optical_settings settings)
      : settings_(settings) {
        check_settings();
    }

    /// Draws R and the reference from `seed`, reseeds the camera's noise and
    /// forgets any calibration.
    void configure(std::size_t in, std::size_t out, std::uint64_t seed) {
        set_up(in, out, seed, 0, out);
    }

    /// This device as camera pixels [first, first + count) of the device
    /// configure(in, total, seed) makes: rows [first, first + count) of its
    /// R (only those are ever drawn, stored or regenerated), the reference
    /// and the sensor's fixed pattern at those pixels. It is a device of its
    /// own in what it measures: its camera calibrates its exposure on its
    /// own pixels and draws noise of its own (a stream per slice), and the
    /// readout's per-frame statistics (the intensity readout's centring and
    /// scaling, the holographic one's mean |r|^2) are over its pixels. With
    /// an ideal camera and the off-axis reference its holographic
    /// projection is those columns of the whole device's (tested). For
    /// DFA layer-parallel training: each process projects e onto its own
    /// layers' pixels. Needs a medium whose rows are independent draws.
    void configure_slice(std::size_t in, std::size_t total, std::uint64_t seed, std::size_t first,
                         std::size_t count) requires row_sliceable_medium<Medium> {
        if (first > total || count > total - first) {
            throw config_error("lightloop::optical: slice [" + std::to_string(first) + ", " +
                               std::to_string(first + count) + ") of " + std::to_string(total) +
                               " outputs is out of range");
        }
        set_up(in, count, seed, first, total);
    }

    /// Where this device's outputs start among the whole device's (0 unless
    /// configure_slice made it).
    std::size_t first_output() const noexcept { return first_output_; }

private:
    /// configure and configure_slice: outputs [first, first + out) of a
    /// device with `total` outputs.
    void set_up(std::size_t in, std::size_t out, std::uint64_t seed, std::size_t first,
                std::size_t total) {
        // Else the readout's calibration would fail first, naming a zero
        // reference power instead of the sizes.
        if (in == 0 || out == 0) {
            throw config_error("lightloop::optical: needs at least one input (micromirror) and "
                               "one output (camera pixel), got " +
                               std::to_string(in) + " -> " + std::to_string(out));
        }
        in_ = in;
        out_ = out;
        first_output_ = first;
        medium_ = Medium(out, in, derive_seed(seed, 0), settings_.variance, settings_.bf16_medium);
        if constexpr (row_sliceable_medium<Medium>) {
            medium_.slice_rows(first);
        }
        // The readout's reference at these pixels (a readout whose configure
        // takes no first pixel serves whole devices only).
        if constexpr (requires { readout_.configure(in, out, seed, settings_.variance, first); }) {
            readout_.configure(in, out, derive_seed(seed, 1), settings_.variance, first);
        } else {
            if (out != total) {
                throw config_error("lightloop::optical: this readout's configure takes no first "
                                   "pixel (in, out, seed, variance, first), so it cannot serve a "
                                   "slice of the device");
            }
            readout_.configure(in, out, derive_seed(seed, 1), settings_.variance);
        }
        // The camera's fixed pattern, if any: a slice's part of the sensor's.
        if constexpr (requires { camera_.configure_sensor(out, seed, first, total); }) {
            camera_.configure_sensor(out, derive_seed(seed, 4), first, total);
        } else if constexpr (requires { camera_.configure_sensor(out, seed); }) {
            if (out != total) {
                throw config_error("lightloop::optical: this camera's configure_sensor takes no "
                                   "slice (pixels, seed, first, total), so a slice of the device "
                                   "cannot have its part of the sensor's fixed pattern");
            }
            camera_.configure_sensor(out, derive_seed(seed, 4));
        }
        // A slice's camera noise is its own: a stream per first pixel.
        const auto own = [&](std::uint64_t s) {
            return out == total ? s : derive_seed(s, (std::uint64_t{1} << 62) + first);
        };
        camera_seed_ = own(derive_seed(seed, 2));
        base_noise_seed_ = own(derive_seed(seed, 3));
        apply_noise_stream();
        if constexpr (requires { camera_.reset_counts(); }) {
            camera_.reset_counts();
        }
        next_block_ = 0;
        extra_pixels_read_ = extra_pixels_saturated_ = 0;
        drift_seed_ = derive_seed(seed, 5);
        drift_steps_ = 0;
        frames_since_calibration_ = 0;
        calibrated_ = false;
        stats_ = optical_statistics{};
        stats_.frame_rate = settings_.frame_rate;
    }

public:
    /// Draws the camera's noise from stream `stream` of the seed's noise
    /// (0, the default, is a single device's): data-parallel ranks share the
    /// medium and reference drawn from the seed and each has a camera of its
    /// own. Kept across configure().
    void set_noise_stream(std::uint64_t stream) {
        noise_stream_ = stream;
        apply_noise_stream();
    }
    std::uint64_t noise_stream() const noexcept { return noise_stream_; }

    /// Everything that fixes the device but the seed (the network's).
    std::string describe() const {
        return "optical [" + describe_object(readout_) + "] [" + describe_object(camera_) + "] [" +
               describe_object(encoder_) + "] medium=" + Medium::name +
               " variance=" + setting_text(settings_.variance) +
               (settings_.bf16_medium ? " bf16_medium" : "") +
               (has_schedule() ? " drift=" + setting_text(settings_.drift) + " recalibrate_every=" +
                                   std::to_string(settings_.recalibrate_every)
                               : std::string());
    }

    /// Calibration, statistics and the noise counter: with them a resumed
    /// run draws the same camera noise as an uninterrupted one.
    void save_state(state_writer& out) const {
        out.u32(calibrated_ ? 1 : 0);
        if constexpr (requires { camera_.settings().exposure; }) {
            out.f64(camera_.settings().exposure);
        } else {
            out.f64(0.0);
        }
        if constexpr (requires { readout_.save_state(out); }) {
            readout_.save_state(out);
        }
        out.u64(next_block_);
        const optical_statistics s = statistics();
        for (const std::uint64_t v : {s.projections, s.patterns, s.frames, s.calibration_frames,
                                      s.pixels_read, s.pixels_saturated}) {
            out.u64(v);
        }
        out.f64(s.signal_energy);
        out.f64(s.noise_energy);
        if (has_schedule()) {
            // A drifted medium and reference are state, no longer the seed's.
            out.u64(drift_steps_);
            out.u64(frames_since_calibration_);
            if constexpr (drifting_medium) {
                medium_.save_state(out);
            }
            if constexpr (requires { readout_.save_reference(out); }) {
                readout_.save_reference(out);
            }
        }
    }

    /// Reads the whole state, then applies it.
    void load_state(state_reader& in) {
        const bool calibrated = in.u32("optical calibrated flag") != 0;
        const double exposure = in.f64("camera exposure");
        Readout readout = readout_;
        if constexpr (requires { readout.load_state(in); }) {
            readout.load_state(in);
        }
        const std::uint64_t next_block = in.u64("optical block counter");
        std::uint64_t counts[6];
        for (auto& v : counts) {
            v = in.u64("optical statistics");
        }
        const double signal = in.f64("optical statistics");
        const double noise = in.f64("optical statistics");
        std::uint64_t drift_steps = 0;
        std::uint64_t since_calibration = 0;
        std::optional<Medium> medium; // staged only when the state holds one
        if (has_schedule()) {
            drift_steps = in.u64("optical drift steps");
            since_calibration = in.u64("optical frames since calibration");
            if constexpr (drifting_medium) {
                medium = medium_;
                medium->load_state(in);
            }
            if constexpr (requires { readout.load_reference(in); }) {
                readout.load_reference(in);
            }
        }
        if (calibrated) {
            if constexpr (requires { camera_.set_exposure(exposure); }) {
                if (!(exposure > 0.0) || !std::isfinite(exposure)) {
                    in.fail("camera exposure " + number_text(exposure) + " is not positive");
                }
                camera_.set_exposure(exposure);
            }
        }
        readout_ = std::move(readout);
        if (medium) {
            medium_ = std::move(*medium);
        }
        drift_steps_ = drift_steps;
        frames_since_calibration_ = since_calibration;
        calibrated_ = calibrated;
        if constexpr (requires { camera_.reset_counts(); }) {
            camera_.reset_counts();
        }
        next_block_ = next_block;
        stats_.projections = counts[0];
        stats_.patterns = counts[1];
        stats_.frames = counts[2];
        stats_.calibration_frames = counts[3];
        stats_.signal_energy = signal;
        stats_.noise_energy = noise;
        extra_pixels_read_ = counts[4] - camera_.pixels_read();
        extra_pixels_saturated_ = counts[5] - camera_.pixels_saturated();
    }

    std::size_t input_size() const noexcept { return in_; }
    std::size_t output_size() const noexcept { return out_; }

    template <scalar T>
    void project(const matrix<T>& x, matrix<T>& y) {
        const std::size_t n = x.shape(0);
        if (x.shape(1) != in_ || y.shape(0) != n || y.shape(1) != out_) {
            throw shape_error("lightloop::optical (" + std::to_string(in_) + " -> " +
                              std::to_string(out_) + "): input is " + std::to_string(n) + "x" +
                              std::to_string(x.shape(1)) + ", output is " +
                              std::to_string(y.shape(0)) + "x" + std::to_string(y.shape(1)));
        }
        auto& buf = buffers_.template get<T>();
        const std::uint64_t frames_before = stats_.frames;
        const std::size_t active = buf.batch.encode(encoder_, x);
        // Each block writes its samples' rows whole (frame_batch::accumulate).
        buf.batch.zero_silent_rows(out_, y);
        if (settings_.track_snr) {
            ensure_shape(buf.ideal, n, out_);
            buf.batch.zero_silent_rows(out_, buf.ideal);
        }
        if (active > 0) {
            medium_.template prepare<T>(); // materialised before the threads read it
            if constexpr (requires { camera_.template prepare<T>(); }) {
                camera_.template prepare<T>(); // its scratch, before the copies are made
            }
            if constexpr (Medium::field_per_batch) { // every frame's field in one product
                ensure_shape(buf.field_re, active, out_);
                ensure_shape(buf.field_im, active, out_);
                medium_.field(buf.batch.frame(0), active, buf.field_re.data(), buf.field_im.data());
            }
            if (!calibrated_) {
                calibrate(buf, active);
            }
            buf.batch.plan_blocks(block_rows);
            const std::size_t blocks = buf.batch.blocks();
            thread_team& team = shared_team();
            ensure_slots(buf, team.size());
            if constexpr (std::is_copy_assignable_v<Camera>) {
                team.run(blocks, [&](std::size_t block, std::size_t worker) {
                    run_block(buf, buf.slots[worker], block, worker == 0, y);
                });
            } else { // one camera, one thread
                for (std::size_t block = 0; block < blocks; ++block) {
                    run_block(buf, buf.slots[0], block, true, y);
                }
            }
            for (auto& slot : buf.slots) {
                extra_pixels_read_ += std::exchange(slot.pixels_read, 0);
                extra_pixels_saturated_ += std::exchange(slot.pixels_saturated, 0);
            }
            next_block_ += blocks;
        }
        finish(buf, y);
        if (settings_.track_snr && active > 0) {
            finish(buf, buf.ideal);
            for (std::size_t i = 0; i < y.size(); ++i) {
                const double ideal = static_cast<double>(buf.ideal.data()[i]);
                const double err = static_cast<double>(y.data()[i]) - ideal;
                stats_.signal_energy += ideal * ideal;
                stats_.noise_energy += err * err;
            }
        }
        stats_.projections += n;
        stats_.patterns += active;
        stats_.frames += active * Readout::exposures_per_frame;
        after_projection<T>(stats_.frames - frames_before);
    }

    /// Counters since configure(), with the camera's pixel counts.
    optical_statistics statistics() const {
        optical_statistics s = stats_;
        s.pixels_read = camera_.pixels_read() + extra_pixels_read_;
        s.pixels_saturated = camera_.pixels_saturated() + extra_pixels_saturated_;
        return s;
    }

    Medium& medium() noexcept { return medium_; }
    Readout& readout() noexcept { return readout_; }
    const Readout& readout() const noexcept { return readout_; }
    Camera& camera_model() noexcept { return camera_; }
    const Encoder& encoder() const noexcept { return encoder_; }
    const optical_settings& settings() const noexcept { return settings_; }
    bool calibrated() const noexcept { return calibrated_; }

private:
    /// One thread's scratch for a block. Worker 0 exposes camera_ itself;
    /// the others a copy of it, refreshed each projection.
    template <class T>
    struct thread_slot {
        matrix<T> re;      // (block_rows x out): one block's field
        matrix<T> im;      // (block_rows x out)
        matrix<T> decoded; // (block_rows x out)
        matrix<T> scratch; // (block_rows x out)
        std::optional<Camera> camera;
        std::uint64_t pixels_read = 0; // by the copy, this projection
        std::uint64_t pixels_saturated = 0;
    };

    template <class T>
    struct workspace {
        frame_batch<T> batch; // the projection's frames
        matrix<T> ideal;      // (n x out), with track_snr
        matrix<T> field_re;   // (active x out): the field, for a field_per_batch medium
        matrix<T> field_im;
        std::vector<thread_slot<T>> slots; // one per thread
    };

    void check_settings() const {
        const auto positive = [](double v) { return v > 0.0 && std::isfinite(v); };
        if (!positive(settings_.variance) || !positive(settings_.frame_rate)) {
            throw config_error(
              "lightloop::optical: variance and frame_rate must be positive and finite, got "
              "variance " +
              number_text(settings_.variance) + ", frame_rate " +
              number_text(settings_.frame_rate));
        }
        if (!(settings_.drift >= 0.0 && settings_.drift < 1.0)) {
            throw config_error("lightloop::optical: drift must be in [0, 1), got " +
                               number_text(settings_.drift));
        }
        if constexpr (!drifting_medium) {
            if (settings_.drift > 0.0) {
                throw config_error(std::string("lightloop::optical: the ") + Medium::name +
                                   " medium cannot drift (only a stored one can)");
            }
        }
    }

    /// Whether drift or recalibration is scheduled: they add to the
    /// signature and to the checkpoint state.
    bool has_schedule() const noexcept {
        return settings_.drift > 0.0 || settings_.recalibrate_every > 0;
    }

    static constexpr std::uint64_t recalibration_stream = 1ULL << 63;

    static constexpr bool drifting_medium = requires(Medium m, double keep, std::uint64_t step) {
        m.drift(keep, step);
    };

    /// After a projection that took `frames` frames: the medium (and a
    /// reference through it) drifts for them, and the reference's |r|^2 is
    /// measured again when its schedule says so.
    template <class T>
    void after_projection(std::uint64_t frames) {
        if constexpr (drifting_medium) {
            if (settings_.drift > 0.0 && frames > 0) {
                const double keep = std::pow(1.0 - settings_.drift, static_cast<double>(frames));
                medium_.drift(keep, drift_steps_);
                if constexpr (requires { readout_.drift(keep, drift_seed_, drift_steps_); }) {
                    readout_.drift(keep, drift_seed_, drift_steps_);
                }
                ++drift_steps_;
            }
        }
        frames_since_calibration_ += frames;
        if (settings_.recalibrate_every > 0 && calibrated_ &&
            frames_since_calibration_ >= settings_.recalibrate_every) {
            if constexpr (requires { readout_.template recalibrate<T>(camera_); }) {
                // Its own noise stream, whichever thread last used camera_.
                camera_.reseed(
                  derive_seed(derive_seed(noise_seed_, recalibration_stream), next_block_));
                const std::size_t extra = readout_.template recalibrate<T>(camera_);
                stats_.frames += extra;
                stats_.calibration_frames += extra;
            }
            frames_since_calibration_ = 0;
        }
    }

    /// Calibrates the camera on the whole first batch (a quantile of its
    /// intensities), once; the exposures it takes are counted.
    template <class T>
    void calibrate(workspace<T>& buf, std::size_t active) {
        matrix<T> scratch = matrix<T>::from_shape({active, out_});
        const T* re = buf.field_re.data(); // a field_per_batch medium's field is made
        const T* im = buf.field_im.data();
        matrix<T> own_re;
        matrix<T> own_im;
        if constexpr (!Medium::field_per_batch) {
            own_re = matrix<T>::from_shape({active, out_});
            own_im = matrix<T>::from_shape({active, out_});
            medium_.field(buf.batch.frame(0), active, own_re.data(), own_im.data());
            re = own_re.data();
            im = own_im.data();
        }
        const std::size_t extra = readout_.calibrate(re, im, active, camera_, scratch.data());
        stats_.frames += extra;
        stats_.calibration_frames += extra;
        calibrated_ = true;
    }

    template <class T>
    void ensure_slots(workspace<T>& buf, std::size_t threads) {
        if (buf.slots.size() < threads) {
            buf.slots.resize(threads);
        }
        for (std::size_t w = 0; w < buf.slots.size(); ++w) {
            auto& slot = buf.slots[w];
            const std::size_t rows = block_rows + encoder_.frames_per_sample();
            if constexpr (!Medium::field_per_batch) { // else the batch's field is read
                ensure_shape(slot.re, rows, out_);
                ensure_shape(slot.im, rows, out_);
            }
            ensure_shape(slot.decoded, rows, out_);
            ensure_shape(slot.scratch, rows, out_);
            if (w > 0 && w < threads) {
                if constexpr (std::is_copy_assignable_v<Camera>) {
                    slot.camera = camera_; // no allocation once the copy exists
                }
            }
        }
    }

    /// Field, exposures and decoding of one block, added to its samples' rows.
    template <class T>
    void run_block(workspace<T>& buf, thread_slot<T>& slot, std::size_t block, bool own_camera,
                   matrix<T>& y) {
        const std::size_t first = buf.batch.block_first(block);
        const std::size_t rows = buf.batch.block_first(block + 1) - first;
        Camera* cam = &camera_;
        if constexpr (std::is_copy_assignable_v<Camera>) {
            if (!own_camera) {
                cam = &*slot.camera;
            }
        }
        const std::uint64_t read_before = cam->pixels_read();
        const std::uint64_t saturated_before = cam->pixels_saturated();
        cam->reseed(derive_seed(noise_seed_, next_block_ + block));
        const T* re = slot.re.data();
        const T* im = slot.im.data();
        if constexpr (Medium::field_per_batch) {
            re = buf.field_re.data() + first * out_;
            im = buf.field_im.data() + first * out_;
        } else {
            medium_.field(buf.batch.frame(first), rows, slot.re.data(), slot.im.data());
        }
        readout_.measure(re, im, rows, *cam, slot.decoded.data(), slot.scratch.data());
        buf.batch.accumulate(first, rows, slot.decoded.data(), out_, y);
        if (settings_.track_snr) {
            readout_.measure_ideal(re, im, rows, slot.decoded.data());
            buf.batch.accumulate(first, rows, slot.decoded.data(), out_, buf.ideal);
        }
        if (!own_camera) {
            slot.pixels_read += cam->pixels_read() - read_before;
            slot.pixels_saturated += cam->pixels_saturated() - saturated_before;
        }
    }

    /// The readout's per-sample scaling (intensity only).
    template <class T>
    void finish(const workspace<T>& buf, matrix<T>& out) const {
        for (std::size_t r = 0; r < out.shape(0); ++r) {
            readout_.finish_sample(std::span<T>(out.data() + r * out_, out_),
                                   buf.batch.encoded_norm2(r));
        }
    }

    /// The camera's seeds for the noise stream (set_noise_stream).
    void apply_noise_stream() {
        const auto stream_of = [&](std::uint64_t seed) {
            return noise_stream_ == 0 ? seed : derive_seed(seed, noise_stream_);
        };
        camera_.reseed(stream_of(camera_seed_));
        noise_seed_ = stream_of(base_noise_seed_);
    }

    /// Frames per block (plus at most one sample's): four (block_rows x out)
    /// buffers stay within L2.
    static constexpr std::size_t block_rows = 16;

    Readout readout_{};
    Camera camera_{};
    Encoder encoder_{};
    optical_settings settings_{};
    std::size_t in_ = 0;
    std::size_t out_ = 0;
    std::size_t first_output_ = 0; // configure_slice's first output
    Medium medium_;
    bool calibrated_ = false;
    optical_statistics stats_{};
    std::uint64_t camera_seed_ = 0;
    std::uint64_t base_noise_seed_ = 0;
    std::uint64_t noise_stream_ = 0; // set_noise_stream
    std::uint64_t noise_seed_ = 0;
    std::uint64_t drift_seed_ = 0;
    std::uint64_t drift_steps_ = 0;              // drifts applied: seeds the next one's innovation
    std::uint64_t frames_since_calibration_ = 0; // for recalibrate_every
    std::uint64_t next_block_ = 0;        // blocks exposed since configure(): seeds their noise
    std::uint64_t extra_pixels_read_ = 0; // by the worker threads' camera copies
    std::uint64_t extra_pixels_saturated_ = 0;
    detail::per_scalar<workspace> buffers_;
};

static_assert(projection_device<optical<>> && projection_device<optical<>, double>);
static_assert(projection_device<optical<intensity_readout>>);
static_assert(projection_device<optical<holographic_readout<dmd_reference>, ideal_camera>>);
static_assert(scattering_medium<transmission_matrix>);

} // namespace lightloop
