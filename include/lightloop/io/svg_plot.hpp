#pragma once
// A minimal SVG line chart, enough for learning curves: several named
// series, linear axes with round ticks, a legend. No dependencies.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "lightloop/core/error.hpp"

namespace lightloop {

struct plot_series {
    std::string name;
    std::vector<double> x;
    std::vector<double> y;
};

struct line_chart {
    std::string title;
    std::string x_label;
    std::string y_label;
    std::vector<plot_series> series;
    int width = 760;
    int height = 480;
};

namespace detail {

inline std::string xml_escape(const std::string& s) {
    std::string out;
    for (const char c : s) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

/// Round tick spacing (1, 2 or 5 times a power of ten) giving about `target` ticks.
inline double tick_step(double span, int target) {
    if (!(span > 0.0)) {
        return 1.0;
    }
    const double raw = span / target;
    const double power = std::pow(10.0, std::floor(std::log10(raw)));
    for (const double m : {1.0, 2.0, 5.0, 10.0}) {
        if (m * power >= raw) {
            return m * power;
        }
    }
    return 10.0 * power;
}

inline std::string fmt(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
}

} // namespace detail

/// Writes `chart` as an SVG file.
inline void write_svg(const line_chart& chart, const std::filesystem::path& path) {
    double x_lo = std::numeric_limits<double>::infinity();
    double x_hi = -x_lo;
    double y_lo = x_lo;
    double y_hi = -x_lo;
    for (const auto& s : chart.series) {
        for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
            if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
                x_lo = std::min(x_lo, s.x[i]);
                x_hi = std::max(x_hi, s.x[i]);
                y_lo = std::min(y_lo, s.y[i]);
                y_hi = std::max(y_hi, s.y[i]);
            }
        }
    }
    if (!std::isfinite(x_lo)) {
        x_lo = 0;
        x_hi = 1;
        y_lo = 0;
        y_hi = 1;
    }
    if (x_hi == x_lo) {
        x_hi = x_lo + 1;
    }
    const double y_step = detail::tick_step(y_hi - y_lo, 6);
    y_lo = std::floor(y_lo / y_step) * y_step;
    y_hi = std::max(std::ceil(y_hi / y_step) * y_step, y_lo + y_step);
    double x_step = detail::tick_step(x_hi - x_lo, 8);
    bool integer_x = true;
    for (const auto& s : chart.series) {
        for (const double x : s.x) {
            integer_x = integer_x && x == std::floor(x);
        }
    }
    if (integer_x) {
        x_step = std::max(x_step, 1.0); // epochs: no fractional ticks
    }

    const double left = 70;
    const double right = 200;
    const double top = 40;
    const double bottom = 55;
    const double pw = chart.width - left - right;
    const double ph = chart.height - top - bottom;
    auto px = [&](double x) { return left + (x - x_lo) / (x_hi - x_lo) * pw; };
    auto py = [&](double y) { return top + (1.0 - (y - y_lo) / (y_hi - y_lo)) * ph; };
    static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                    "#9467bd", "#8c564b", "#e377c2", "#17becf"};

    std::ofstream out(path);
    if (!out) {
        throw data_error("lightloop: " + path.string() + ": cannot write SVG");
    }
    using detail::fmt;
    out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << chart.width << "\" height=\""
        << chart.height << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    out << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    out << "<text x=\"" << left + pw / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">"
        << detail::xml_escape(chart.title) << "</text>\n";
    for (double y = y_lo; y <= y_hi + y_step / 2; y += y_step) {
        out << "<line x1=\"" << left << "\" x2=\"" << left + pw << "\" y1=\"" << py(y) << "\" y2=\""
            << py(y) << "\" stroke=\"#ddd\"/>\n";
        out << "<text x=\"" << left - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">"
            << fmt(std::round(y / y_step) * y_step) << "</text>\n";
    }
    for (double x = std::ceil(x_lo / x_step) * x_step; x <= x_hi + x_step / 2; x += x_step) {
        out << "<line x1=\"" << px(x) << "\" x2=\"" << px(x) << "\" y1=\"" << top + ph << "\" y2=\""
            << top + ph + 5 << "\" stroke=\"black\"/>\n";
        out << "<text x=\"" << px(x) << "\" y=\"" << top + ph + 19 << "\" text-anchor=\"middle\">"
            << fmt(x) << "</text>\n";
    }
    out << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
        << "\" fill=\"none\" stroke=\"black\"/>\n";
    out << "<text x=\"" << left + pw / 2 << "\" y=\"" << chart.height - 12
        << "\" text-anchor=\"middle\">" << detail::xml_escape(chart.x_label) << "</text>\n";
    out << "<text transform=\"translate(18," << top + ph / 2
        << ") rotate(-90)\" text-anchor=\"middle\">" << detail::xml_escape(chart.y_label)
        << "</text>\n";
    for (std::size_t k = 0; k < chart.series.size(); ++k) {
        const auto& s = chart.series[k];
        const char* colour = colours[k % 8];
        out << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\"";
        for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
            if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
                out << px(s.x[i]) << ',' << py(s.y[i]) << ' ';
            }
        }
        out << "\"/>\n";
        for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
            if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
                out << "<circle cx=\"" << px(s.x[i]) << "\" cy=\"" << py(s.y[i])
                    << "\" r=\"3\" fill=\"" << colour << "\"/>\n";
            }
        }
        const double ly = top + 10 + 20.0 * static_cast<double>(k);
        out << "<line x1=\"" << left + pw + 15 << "\" x2=\"" << left + pw + 40 << "\" y1=\"" << ly
            << "\" y2=\"" << ly << "\" stroke=\"" << colour << "\" stroke-width=\"2\"/>\n";
        out << "<text x=\"" << left + pw + 46 << "\" y=\"" << ly + 4 << "\">"
            << detail::xml_escape(s.name) << "</text>\n";
    }
    out << "</svg>\n";
    if (!out) {
        throw data_error("lightloop: " + path.string() + ": write failed");
    }
}

} // namespace lightloop
