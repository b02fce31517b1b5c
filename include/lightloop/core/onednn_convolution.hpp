#pragma once
// oneDNN's own convolution primitives, for conv2d (layers/conv2d.hpp) where
// oneDNN is built in (LIGHTLOOP_WITH_ONEDNN; without it this header declares
// nothing and conv2d runs its im2col products).
//
// A conv_plan is one layer's convolution for chunks of a fixed number of
// samples: its forward, backward-weights and backward-data primitives, each
// on the layout oneDNN prefers for this CPU (blocked, e.g. nChw16c), in fp32
// or in bf16 operands with fp32 results, and the reorders between those
// layouts and lightloop's batch rows (n x C·H·W, channel-major = nchw, fp32):
//   forward           x rows -> blocked input (kept for the weight gradient)
//                     -> convolution -> blocked a -> a rows
//   weight gradient   delta rows -> blocked delta; with the blocked input
//                     -> dW (out x in·k·k, fp32, overwritten)
//   backward data     delta rows -> blocked delta -> convolution with the
//                     filters -> blocked gradient -> input-gradient rows
// The reorders from fp32 rows convert to bf16 in the same pass (rounding to
// nearest even, as lightloop's own conversion). The filters are reordered
// from their plain (out, in, k, k) bf16 or fp32 copy once per call
// (load_*_filters, on the calling thread).
//
// bf16 operands without bf16 instructions (oneDNN 2.6 emulates bf16
// convolutions on AVX-512 without AVX512-BF16, slower than its fp32 ones, and
// has none on AVX2): a bf16 plan is widened there, as the bf16 products are
// (core/onednn.hpp). Its primitives are fp32 ones; the rows are rounded to
// bf16 values (kept as floats) before their reorders, and the bf16 filters
// widened by theirs. A product of two bf16 values is exact in fp32, so the
// convolution sums the same products in fp32, at fp32 speed.
//
// Threads: as for the matmuls (core/onednn.hpp), each call is one oneDNN
// execution held at one OpenMP thread; conv2d runs its chunks on lightloop's
// team, one chunk a thread. Each worker thread has its own binding (stream,
// memory objects, blocked buffers, scratchpad), made by prepare_workers
// before the team runs. Everything is created once per plan; an execution
// creates nothing (oneDNN's own per-execution allocations aside, counted
// apart by the allocation test).

#if defined(LIGHTLOOP_WITH_ONEDNN)

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lightloop/core/bf16.hpp"
#include "lightloop/core/error.hpp"
#include "lightloop/core/onednn.hpp"

namespace lightloop::detail::onednn {

/// A convolution's shape: input maps, output maps, square kernel, stride and
/// zero padding (the same on every side).
struct conv_geometry {
    std::size_t in_channels, in_height, in_width;
    std::size_t out_channels, out_height, out_width;
    std::size_t kernel, stride, padding;
};

/// Bytes whose start is aligned to 64 (oneDNN's kernels load whole cache
/// lines).
class aligned_buffer {
public:
    void reserve(std::size_t bytes) {
        if (bytes > size_) {
            storage_.assign(bytes + 64, std::byte{0});
            size_ = bytes;
        }
    }
    void* data() noexcept {
        const auto address = reinterpret_cast<std::uintptr_t>(storage_.data());
        return storage_.data() + ((64 - address % 64) % 64);
    }

private:
    std::vector<std::byte> storage_;
    std::size_t size_ = 0;
};

/// execute and bind (core/onednn.hpp) for the C++ API's handles.
inline void execute(const dnnl::primitive& p, const dnnl::stream& s, const dnnl_exec_arg_t* args,
                    int count, const char* what) {
    execute(p.get(), s.get(), args, count, what);
}
inline void bind(const dnnl::memory& m, const void* data, const dnnl::stream& s) {
    bind(m.get(), data, s.get());
}

inline bool bf16_convolutions_native();

template <class Operand>
class conv_plan {
    static constexpr bool bf16_operands = std::is_same_v<Operand, bf16>;
    static constexpr dnnl::memory::data_type operand_type =
      bf16_operands ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
    using md = dnnl::memory::desc;
    using tag = dnnl::memory::format_tag;
    using f = dnnl::memory::data_type;

public:
    /// The plan for chunks of `samples`; a bf16 plan runs bf16 primitives
    /// where oneDNN has them on bf16 instructions, else fp32 primitives of
    /// the rounded values (`widen`; see the file comment).
    conv_plan(const conv_geometry& g, std::size_t samples)
      : conv_plan(g, samples, bf16_operands && !bf16_convolutions_native()) {}

    conv_plan(const conv_geometry& g, std::size_t samples, bool widen) try
      : samples_(samples)
      , widened_(bf16_operands && widen)
      , in_values_(samples * g.in_channels * g.in_height * g.in_width)
      , out_values_(samples * g.out_channels * g.out_height * g.out_width) {
        cpu_.reset(engine(), true); // the process's engine (core/onednn.hpp), not owned
        static_assert(std::is_same_v<Operand, bf16> || std::is_same_v<Operand, float>,
                      "oneDNN convolutions take bf16 or float operands");
        // The primitives' operands: the layer's type, or floats holding
        // bf16 values when widened.
        const f operands = widened_ ? f::f32 : operand_type;
        const omp_single_thread hold; // primitives sized for one thread
        const auto d = [](std::size_t v) { return static_cast<dnnl::memory::dim>(v); };
        const dnnl::memory::dims src{d(samples), d(g.in_channels), d(g.in_height), d(g.in_width)};
        const dnnl::memory::dims dst{d(samples), d(g.out_channels), d(g.out_height),
                                     d(g.out_width)};
        const dnnl::memory::dims filters{d(g.out_channels), d(g.in_channels), d(g.kernel),
                                         d(g.kernel)};
        const dnnl::memory::dims strides{d(g.stride), d(g.stride)};
        // oneDNN's padding on the far side: what makes its output size ours
        // (the last window may leave input columns unread).
        const auto far = [&](std::size_t in, std::size_t out) {
            return d((out - 1) * g.stride + g.kernel) - d(in) - d(g.padding);
        };
        const dnnl::memory::dims near{d(g.padding), d(g.padding)};
        const dnnl::memory::dims far_pad{far(g.in_height, g.out_height),
                                         far(g.in_width, g.out_width)};
        dnnl::primitive_attr attr;
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        const md src_any(src, operands, tag::any);
        const md filters_any(filters, operands, tag::any);
        const md delta_any(dst, operands, tag::any);
        forward_pd_ = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                          dnnl::algorithm::convolution_direct, src_any, filters_any,
                                          md(dst, f::f32, tag::any), strides, near, far_pad),
          attr, cpu_);
        gradient_pd_ = dnnl::convolution_backward_weights::primitive_desc(
          dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src_any,
                                                   md(filters, f::f32, tag::any), delta_any,
                                                   strides, near, far_pad),
          attr, cpu_, forward_pd_);
        backward_pd_ = dnnl::convolution_backward_data::primitive_desc(
          dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct,
                                                md(src, f::f32, tag::any), filters_any, delta_any,
                                                strides, near, far_pad),
          attr, cpu_, forward_pd_);
        forward_ = dnnl::convolution_forward(forward_pd_);
        gradient_ = dnnl::convolution_backward_weights(gradient_pd_);
        backward_ = dnnl::convolution_backward_data(backward_pd_);
        // The plain forms: lightloop's rows and filters.
        x_rows_ = md(src, f::f32, tag::nchw);
        a_rows_ = md(dst, f::f32, tag::nchw);
        filters_plain_ = md(filters, operand_type, tag::oihw);
        gradient_plain_ = md(filters, f::f32, tag::oihw);
        gradient_reuses_input_ = gradient_pd_.src_desc() == forward_pd_.src_desc();
        gradient_is_plain_ = gradient_pd_.diff_weights_desc() == gradient_plain_;
        const auto make_reorder = [&](const md& from, const md& to) {
            auto pd = dnnl::reorder::primitive_desc(cpu_, from, cpu_, to, attr);
            scratch_bytes_ = std::max(scratch_bytes_, pd.scratchpad_desc().get_size());
            return dnnl::reorder(pd);
        };
        to_input_ = make_reorder(x_rows_, forward_pd_.src_desc());
        from_output_ = make_reorder(forward_pd_.dst_desc(), a_rows_);
        to_gradient_input_ = make_reorder(x_rows_, gradient_pd_.src_desc());
        to_gradient_delta_ = make_reorder(a_rows_, gradient_pd_.diff_dst_desc());
        from_gradient_ = make_reorder(gradient_pd_.diff_weights_desc(), gradient_plain_);
        to_backward_delta_ = make_reorder(a_rows_, backward_pd_.diff_dst_desc());
        from_backward_ = make_reorder(backward_pd_.diff_src_desc(), x_rows_);
        to_forward_filters_ = make_reorder(filters_plain_, forward_pd_.weights_desc());
        to_backward_filters_ = make_reorder(filters_plain_, backward_pd_.weights_desc());
        for (const auto* pd : {static_cast<const dnnl::primitive_desc*>(&forward_pd_),
                               static_cast<const dnnl::primitive_desc*>(&gradient_pd_),
                               static_cast<const dnnl::primitive_desc*>(&backward_pd_)}) {
            scratch_bytes_ = std::max(scratch_bytes_, pd->scratchpad_desc().get_size());
        }
        input_bytes_ = forward_pd_.src_desc().get_size();
        forward_filters_.reserve(forward_pd_.weights_desc().get_size());
        backward_filters_.reserve(backward_pd_.weights_desc().get_size());
    } catch (const dnnl::error& e) {
        throw error(std::string("lightloop: oneDNN convolution setup failed: ") + e.what());
    }

    conv_plan(const conv_plan&) = delete;
    conv_plan& operator=(const conv_plan&) = delete;

    std::size_t samples() const noexcept { return samples_; }
    /// Bytes of the blocked input of this plan's samples (forward's layout).
    std::size_t input_bytes() const noexcept { return input_bytes_; }

    /// One binding for each of `workers` threads (made here, before the team
    /// runs, so that the chunks create nothing).
    void prepare_workers(std::size_t workers) {
        while (workers_.size() < workers) {
            workers_.push_back(std::make_unique<binding>(*this));
        }
    }

    /// The filters (out x in·k·k, plain, Operand) for the forward, and for
    /// the backward-data product (conv2d's W, or feedback alignment's).
    void load_forward_filters(const Operand* w) {
        load(to_forward_filters_, w, &binding::filters, forward_filters_);
    }
    void load_backward_filters(const Operand* w) {
        load(to_backward_filters_, w, &binding::backward_filters, backward_filters_);
    }

    /// a (samples x out maps, fp32 rows) = the convolution of x (samples x
    /// in maps, fp32 rows) with the loaded forward filters, no bias;
    /// `blocked_input` (input_bytes()) keeps x in the forward's layout for
    /// the weight gradient.
    void forward(std::size_t worker, const float* x, void* blocked_input, float* a) {
        const omp_single_thread hold;
        binding& b = *workers_[worker];
        run_reorder(to_input_, b, b.x_rows, operand_rows(x, in_values_, b.x_values), b.input,
                    blocked_input);
        bind(b.filters, forward_filters_.data(), b.s);
        bind(b.output, b.output_space.data(), b.s);
        bind(b.scratch, b.scratch_space.data(), b.s);
        const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, b.input.get()},
                                        {DNNL_ARG_WEIGHTS, b.filters.get()},
                                        {DNNL_ARG_DST, b.output.get()},
                                        {DNNL_ARG_SCRATCHPAD, b.scratch.get()}};
        execute(forward_, b.s, args, 4, "convolution");
        run_reorder(from_output_, b, b.output, b.output_space.data(), b.a_rows, a);
    }

    /// dW (out x in·k·k, fp32, plain; overwritten) = the sum over this
    /// chunk's samples and positions of delta ⊗ patch, from the forward's
    /// blocked input of the same samples, or from x when that is null or the
    /// weight gradient wants another layout.
    void weight_gradient(std::size_t worker, const float* x, const void* blocked_input,
                         const float* delta, float* dw) {
        const omp_single_thread hold;
        binding& b = *workers_[worker];
        const void* input = blocked_input;
        if (input == nullptr || !gradient_reuses_input_) {
            run_reorder(to_gradient_input_, b, b.x_rows, operand_rows(x, in_values_, b.x_values),
                        b.gradient_input, b.gradient_input_space.data());
            input = b.gradient_input_space.data();
        }
        run_reorder(to_gradient_delta_, b, b.a_rows,
                    operand_rows(delta, out_values_, b.delta_values), b.gradient_delta,
                    b.gradient_delta_space.data());
        bind(b.gradient_input, input, b.s);
        void* into = gradient_is_plain_ ? static_cast<void*>(dw) : b.gradient_space.data();
        bind(b.gradient, into, b.s);
        bind(b.scratch, b.scratch_space.data(), b.s);
        const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, b.gradient_input.get()},
                                        {DNNL_ARG_DIFF_DST, b.gradient_delta.get()},
                                        {DNNL_ARG_DIFF_WEIGHTS, b.gradient.get()},
                                        {DNNL_ARG_SCRATCHPAD, b.scratch.get()}};
        execute(gradient_, b.s, args, 4, "convolution weight gradient");
        if (!gradient_is_plain_) {
            run_reorder(from_gradient_, b, b.gradient, into, b.gradient_rows, dw);
        }
    }

    /// into (samples x in maps, fp32 rows) = delta (samples x out maps, fp32
    /// rows) through the loaded backward filters: the backward-data product.
    void backward_data(std::size_t worker, const float* delta, float* into) {
        const omp_single_thread hold;
        binding& b = *workers_[worker];
        run_reorder(to_backward_delta_, b, b.a_rows,
                    operand_rows(delta, out_values_, b.delta_values), b.backward_delta,
                    b.backward_delta_space.data());
        bind(b.backward_filters, backward_filters_.data(), b.s);
        bind(b.backward_output, b.backward_space.data(), b.s);
        bind(b.scratch, b.scratch_space.data(), b.s);
        const dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, b.backward_delta.get()},
                                        {DNNL_ARG_WEIGHTS, b.backward_filters.get()},
                                        {DNNL_ARG_DIFF_SRC, b.backward_output.get()},
                                        {DNNL_ARG_SCRATCHPAD, b.scratch.get()}};
        execute(backward_, b.s, args, 4, "convolution backward data");
        run_reorder(from_backward_, b, b.backward_output, b.backward_space.data(), b.x_rows, into);
    }

private:
    /// One worker thread's stream, memory objects (their data pointers set
    /// per execution) and buffers.
    struct binding {
        dnnl::stream s;
        dnnl::memory x_rows, a_rows, input, filters, output;
        dnnl::memory gradient_input, gradient_delta, gradient, gradient_rows;
        dnnl::memory backward_delta, backward_filters, backward_output;
        dnnl::memory scratch, plain_filters;
        aligned_buffer output_space, gradient_input_space, gradient_delta_space, gradient_space,
          backward_delta_space, backward_space, scratch_space;
        std::vector<float> x_values, delta_values; // a widened plan's rounded rows

        explicit binding(const conv_plan& p)
          : s(p.cpu_) {
            const auto none = [&](const md& desc) { return dnnl::memory(desc, p.cpu_, nullptr); };
            x_rows = none(p.x_rows_);
            a_rows = none(p.a_rows_);
            input = none(p.forward_pd_.src_desc());
            filters = none(p.forward_pd_.weights_desc());
            output = none(p.forward_pd_.dst_desc());
            gradient_input = none(p.gradient_pd_.src_desc());
            gradient_delta = none(p.gradient_pd_.diff_dst_desc());
            gradient = none(p.gradient_pd_.diff_weights_desc());
            gradient_rows = none(p.gradient_plain_);
            plain_filters = none(p.filters_plain_);
            backward_delta = none(p.backward_pd_.diff_dst_desc());
            backward_filters = none(p.backward_pd_.weights_desc());
            backward_output = none(p.backward_pd_.diff_src_desc());
            scratch = none(dnnl::memory::desc(
              {static_cast<dnnl::memory::dim>(std::max<std::size_t>(p.scratch_bytes_, 1))},
              dnnl::memory::data_type::u8, tag::x));
            output_space.reserve(p.forward_pd_.dst_desc().get_size());
            gradient_input_space.reserve(p.gradient_pd_.src_desc().get_size());
            gradient_delta_space.reserve(p.gradient_pd_.diff_dst_desc().get_size());
            if (!p.gradient_is_plain_) {
                gradient_space.reserve(p.gradient_pd_.diff_weights_desc().get_size());
            }
            backward_delta_space.reserve(p.backward_pd_.diff_dst_desc().get_size());
            backward_space.reserve(p.backward_pd_.diff_src_desc().get_size());
            scratch_space.reserve(std::max<std::size_t>(p.scratch_bytes_, 1));
            if (p.widened_) {
                x_values.resize(p.in_values_);
                delta_values.resize(p.out_values_);
            }
        }
    };

    /// The rows a reorder reads: `rows` (count floats), or, widened, their
    /// values rounded to bf16 in `values`.
    const float* operand_rows(const float* rows, std::size_t count,
                              std::vector<float>& values) const noexcept {
        if (!widened_) {
            return rows;
        }
        convert_to_bf16(rows, values.data(), count);
        return values.data();
    }

    /// to = reorder(from), binding the two memory objects to the pointers.
    void run_reorder(const dnnl::reorder& r, binding& b, const dnnl::memory& from,
                     const void* from_data, const dnnl::memory& to, void* to_data) const {
        bind(from, from_data, b.s);
        bind(to, to_data, b.s);
        bind(b.scratch, b.scratch_space.data(), b.s);
        const dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, from.get()},
                                        {DNNL_ARG_TO, to.get()},
                                        {DNNL_ARG_SCRATCHPAD, b.scratch.get()}};
        execute(r, b.s, args, 3, "reorder");
    }

    /// Reorders plain filters into `into` (through the binding's memory
    /// object `target`) on the calling thread: the first worker's binding,
    /// at one OpenMP thread.
    void load(const dnnl::reorder& r, const Operand* w, dnnl::memory binding::*target,
              aligned_buffer& into) {
        const omp_single_thread hold;
        prepare_workers(1);
        binding& b = *workers_[0];
        run_reorder(r, b, b.plain_filters, w, b.*target, into.data());
    }

    std::size_t samples_;
    bool widened_;
    std::size_t in_values_, out_values_; // floats in a chunk's input and output rows
    dnnl::engine cpu_;
    dnnl::convolution_forward::primitive_desc forward_pd_;
    dnnl::convolution_backward_weights::primitive_desc gradient_pd_;
    dnnl::convolution_backward_data::primitive_desc backward_pd_;
    dnnl::convolution_forward forward_;
    dnnl::convolution_backward_weights gradient_;
    dnnl::convolution_backward_data backward_;
    md x_rows_, a_rows_, filters_plain_, gradient_plain_;
    bool gradient_reuses_input_ = false;
    bool gradient_is_plain_ = false;
    std::size_t scratch_bytes_ = 0;
    std::size_t input_bytes_ = 0; // (pd queries allocate: asked once)
    dnnl::reorder to_input_, from_output_, to_gradient_input_, to_gradient_delta_, from_gradient_,
      to_backward_delta_, from_backward_, to_forward_filters_, to_backward_filters_;
    aligned_buffer forward_filters_, backward_filters_;
    std::vector<std::unique_ptr<binding>> workers_;
};

/// Whether bf16 convolutions run as oneDNN's bf16 primitives here: its
/// effective ISA has bf16 instructions (AMX or AVX512-BF16) and it creates
/// them (forward, backward weights and backward data, with their reorders;
/// probed once per process with a small convolution). Elsewhere bf16 plans
/// are widened (see the file comment).
inline bool bf16_convolutions_native() {
    static const bool native = [] {
        if (!native_bf16_isa()) {
            return false;
        }
        try {
            const conv_plan<bf16> probe({1, 4, 4, 1, 4, 4, 3, 1, 1}, 1, false);
            return true;
        } catch (const error&) {
            return false;
        }
    }();
    return native;
}

/// A layer's plans, one per chunk size it has met (the full chunk and the
/// batch's remainder), and the batch's input in the forward's layout. A copy
/// of a layer makes its own (a copy starts empty).
template <class Operand>
class conv_plans {
public:
    conv_plans() = default;
    conv_plans(const conv_plans&) {}
    conv_plans& operator=(const conv_plans&) {
        plans_.clear();
        input_source = nullptr;
        return *this;
    }
    conv_plans(conv_plans&&) noexcept = default;
    conv_plans& operator=(conv_plans&&) noexcept = default;
    ~conv_plans() = default;

    /// The plan for chunks of `samples`, with bindings for `workers` threads
    /// (created on first use).
    conv_plan<Operand>& get(const conv_geometry& g, std::size_t samples, std::size_t workers) {
        auto found = std::find_if(plans_.begin(), plans_.end(),
                                  [&](const auto& p) { return p->samples() == samples; });
        if (found == plans_.end()) {
            plans_.push_back(std::make_unique<conv_plan<Operand>>(g, samples));
            found = plans_.end() - 1;
        }
        (*found)->prepare_workers(workers);
        return **found;
    }

    /// The batch's input in the forward's layout, chunk after chunk, and the
    /// rows it was made from (for the weight gradient of the same x).
    aligned_buffer input;
    const float* input_source = nullptr;
    std::size_t input_rows = 0;

private:
    std::vector<std::unique_ptr<conv_plan<Operand>>> plans_;
};

} // namespace lightloop::detail::onednn

#endif // LIGHTLOOP_WITH_ONEDNN
