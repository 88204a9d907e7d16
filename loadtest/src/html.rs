//! The self-contained HTML report: inline CSS and SVG charts drawn here (no script, no
//! fetch), so the file can be mailed or archived as it is.

use std::fmt::Write as _;

use crate::report::{PhaseReport, Report};
use crate::stats::{Latencies, ms};

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];
const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

pub fn render(report: &Report) -> String {
    let mut html = String::new();
    let title = escape(&report.title());
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{CSS}</style></head><body><h1>{title}</h1>"
    );
    let about = &report.meta.about;
    let _ = write!(
        html,
        "<p>Commit <code>{}</code>, {} CPUs ({}), {} GiB. Load average {} before, {} after.</p>",
        escape(about["commit"].as_str().unwrap_or("unknown")),
        about["machine"]["cpus"],
        escape(
            about["machine"]["cpu_model"]
                .as_str()
                .unwrap_or("unknown model")
        ),
        about["machine"]["memory_gib"],
        load(report.meta.load_before),
        load(report.load_after),
    );
    let _ = write!(
        html,
        "<p>Fleet: <code>{}</code></p>",
        escape(&about["fleet"].to_string())
    );

    html.push_str("<h2>Figures</h2>");
    if report.meta.mode == "ramp" {
        match report.max_sustained() {
            Some(best) => {
                let _ = write!(
                    html,
                    "<p class=\"verdict\">Maximum sustainable rate: <b>{} webhooks/s</b>, {:.0} node steps/s.</p>",
                    best.rate.unwrap_or_default(),
                    best.steps_per_second
                );
            }
            None => html.push_str("<p class=\"verdict\">No step was kept up with.</p>"),
        }
        if let Some(reason) = report.ramp_stop() {
            let _ = write!(html, "<p>The ramp stopped: {}.</p>", escape(reason));
        }
    }
    html.push_str(&phase_table(report));

    html.push_str("<h2>Throughput over time</h2>");
    html.push_str(&line_chart(
        "per second",
        "seconds",
        &throughput_series(report),
    ));
    if report.timeline.iter().any(|t| t.tasks_in_flight.is_some()) {
        let points = report
            .timeline
            .iter()
            .filter_map(|t| Some((t.t, t.tasks_in_flight?)))
            .collect();
        html.push_str(&line_chart(
            "worker tasks in flight",
            "seconds",
            &[Series {
                name: "tasks in flight".into(),
                points,
            }],
        ));
    }

    html.push_str("<h2>Latency distributions</h2>");
    let total = &report.total;
    for (name, latencies) in [
        ("webhook accept", &total.accept),
        ("trigger → completion", &total.completion),
        ("step overhead", &total.overhead),
        ("trigger → first request", &total.start),
    ] {
        html.push_str(&histogram(name, latencies));
    }

    html.push_str("<h2>Processes</h2>");
    html.push_str(&process_table(report));
    html.push_str(&line_chart(
        "CPU % (100 = one core)",
        "seconds",
        &process_series(report, |p| p.cpu_percent),
    ));
    html.push_str(&line_chart(
        "RSS MiB",
        "seconds",
        &process_series(report, |p| p.rss_mib),
    ));

    html.push_str(
        "<h2>How these were measured</h2><ul>\
         <li>Webhooks are sent open-loop on a fixed schedule; accept latency counts from the scheduled time.</li>\
         <li>Completions come from the fleet's run records (created → finished); every accepted run is counted completed, failed, or lost (not finished when the drain ended).</li>\
         <li>Node steps per second: completed runs per second × upstream calls per run; the chart's upstream calls are the mock's own count.</li>\
         <li>Step overhead: for a sample of completed runs, the next action node's start minus the previous action node's finish (both taken by the workers: just before a request, and just before publishing its result), so it spans the result's publish, the scheduler's transaction and dispatch, and the worker's take-up.</li>\
         <li>CPU and RSS are read from /proc once a second; PostgreSQL is every <code>postgres</code> process summed (PSS counts shared buffers once).</li>\
         </ul>",
    );
    html.push_str("</body></html>\n");
    html
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:900px;color:#222}\
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}\
td:first-child,th:first-child{text-align:left}code{font-size:12px}\
.verdict{font-size:18px}svg{display:block;margin:8px 0 18px}\
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#333}";

fn phase_table(report: &Report) -> String {
    let mut html = String::from(
        "<table><tr><th>phase</th><th>offered</th><th>accepted</th><th>refused</th>\
         <th>completed</th><th>failed</th><th>lost</th><th>accepted/s</th><th>completed runs/s</th>\
         <th>node steps/s</th><th>accept p50 / p99 / p99.9</th><th>completion p50 / p99</th>\
         <th>step overhead p50 / p99</th><th>verdict</th></tr>",
    );
    let mut rows: Vec<&PhaseReport> = report.phases.iter().collect();
    if report.phases.len() > 1 {
        rows.push(&report.total);
    }
    for p in rows {
        let verdict = p.verdict.as_ref().map_or(String::new(), |v| {
            if v.sustained {
                "kept up".to_owned()
            } else {
                escape(&v.reason)
            }
        });
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.1}</td><td>{:.1}</td><td>{:.0}</td><td>{} / {} / {}</td><td>{} / {}</td>\
             <td>{} / {}</td><td>{verdict}</td></tr>",
            escape(&p.label),
            p.offered,
            p.accepted,
            p.refused,
            p.completed,
            p.failed,
            p.lost,
            p.accepted as f64 / p.offered_for.as_secs_f64(),
            p.completed_per_second,
            p.steps_per_second,
            ms(p.accept.q(0.5)),
            ms(p.accept.q(0.99)),
            ms(p.accept.q(0.999)),
            ms(p.completion.q(0.5)),
            ms(p.completion.q(0.99)),
            ms(p.overhead.q(0.5)),
            ms(p.overhead.q(0.99)),
        );
    }
    html.push_str("</table>");
    if let Some(max) = report.tasks_in_flight_max() {
        let _ = write!(
            html,
            "<p>Worker tasks in flight, highest sample: {max:.0}.</p>"
        );
    }
    html
}

fn process_table(report: &Report) -> String {
    let mut html = String::from(
        "<table><tr><th>process</th><th>CPU avg %</th><th>CPU max %</th>\
         <th>CPU ms per node step</th><th>RSS avg MiB</th><th>RSS max MiB</th>\
         <th>PSS max MiB</th></tr>",
    );
    for p in &report.processes {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.3}</td><td>{:.1}</td>\
             <td>{:.1}</td><td>{}</td></tr>",
            escape(&p.name),
            p.cpu_avg_percent,
            p.cpu_max_percent,
            p.cpu_seconds * 1e3 / report.steps_done(),
            p.rss_avg_mib,
            p.rss_max_mib,
            p.pss_max_mib.map_or(String::new(), |v| format!("{v:.1}"))
        );
    }
    let _ = write!(
        html,
        "</table><p>CPU per node step of the fleet, RabbitMQ and PostgreSQL: {:.3} ms.</p>",
        report.cpu_ms_per_step()
    );
    html
}

/// Offered, accepted and upstream calls per second from the timeline's counters, and
/// completed runs per second from the run records.
fn throughput_series(report: &Report) -> Vec<Series> {
    // Counts start at zero with the load, so the first tick's rate is over [0, t].
    let per_second = |f: fn(&crate::monitor::Tick) -> u64| -> Vec<(f64, f64)> {
        let mut before = (0.0, 0);
        report
            .timeline
            .iter()
            .map(|tick| {
                let seconds = (tick.t - before.0).max(1e-3);
                let rate = f(tick).saturating_sub(before.1) as f64 / seconds;
                before = (tick.t, f(tick));
                (tick.t, rate)
            })
            .collect()
    };
    vec![
        Series {
            name: "webhooks offered/s".into(),
            points: per_second(|t| t.offered),
        },
        Series {
            name: "accepted/s".into(),
            points: per_second(|t| t.accepted),
        },
        Series {
            name: "completed runs/s".into(),
            points: report
                .completions_per_second
                .iter()
                .enumerate()
                .map(|(s, n)| (s as f64 + 1.0, *n as f64))
                .collect(),
        },
        Series {
            name: "node steps/s (upstream calls)".into(),
            points: per_second(|t| t.upstream_calls),
        },
    ]
}

fn process_series(report: &Report, value: fn(&crate::procs::ProcSample) -> f64) -> Vec<Series> {
    report
        .processes
        .iter()
        .map(|summary| Series {
            name: summary.name.clone(),
            points: report
                .timeline
                .iter()
                .filter_map(|t| {
                    let sample = t.processes.iter().find(|p| p.name == summary.name)?;
                    Some((t.t, value(sample)))
                })
                .collect(),
        })
        .collect()
}

/// A round upper bound for an axis, with the next round value above it so little of the
/// plot is left empty (ticks divide it in fifths).
pub fn nice_ceiling(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|bound| *bound >= value * (1.0 - 1e-12))
        .unwrap_or(10.0 * power)
}

fn label(value: f64) -> String {
    if value == 0.0 || value.abs() >= 10.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A line chart of several series over a shared x axis starting at zero.
pub fn line_chart(title: &str, x_name: &str, series: &[Series]) -> String {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (max_x, max_y) = points.fold((0.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let (max_x, max_y) = (nice_ceiling(max_x), nice_ceiling(max_y));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / max_x * plot_w;
    let sy = |y: f64| TOP + plot_h - y / max_y * plot_h;
    let mut svg = svg_open(title);
    for i in 0..=5 {
        let y = max_y * f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            sy(y),
            sy(y),
            LEFT - 6.0,
            sy(y) + 4.0,
            label(y)
        );
    }
    for i in 0..=5 {
        let x = max_x * f64::from(i) / 5.0;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            sx(x),
            HEIGHT - BOTTOM + 16.0,
            label(x)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        escape(x_name)
    );
    let mut legend_x = LEFT;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if s.points.len() > 1 {
            let path: Vec<String> = s
                .points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{}\"/>",
                path.join(" ")
            );
        } else if let Some((x, y)) = s.points.first() {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                sx(*x),
                sy(*y)
            );
        }
        let _ = write!(
            svg,
            "<rect x=\"{legend_x:.1}\" y=\"22\" width=\"10\" height=\"3\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"27\">{}</text>",
            legend_x + 14.0,
            escape(&s.name)
        );
        legend_x += 24.0 + 6.5 * s.name.chars().count() as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// Counts per log-scale latency bucket, with the percentiles marked in the title.
pub fn histogram(name: &str, latencies: &Latencies) -> String {
    let buckets = latencies.histogram();
    let title = if latencies.len() == 0 {
        format!("{name}: no samples")
    } else {
        format!(
            "{name}: p50 {}, p99 {}, p99.9 {}, max {} (n={})",
            ms(latencies.q(0.5)),
            ms(latencies.q(0.99)),
            ms(latencies.q(0.999)),
            ms(latencies.max()),
            latencies.len()
        )
    };
    let mut svg = svg_open(&title);
    if buckets.is_empty() {
        svg.push_str("</svg>");
        return svg;
    }
    let max_count = nice_ceiling(buckets.iter().map(|(_, n)| *n).max().unwrap_or(1) as f64);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let bar_w = plot_w / buckets.len() as f64;
    for i in 0..=5 {
        let count = max_count * f64::from(i) / 5.0;
        let y = TOP + plot_h - count / max_count * plot_h;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            label(count)
        );
    }
    let every = (buckets.len() / 12).max(1);
    for (i, (bound, count)) in buckets.iter().enumerate() {
        let height = *count as f64 / max_count * plot_h;
        let x = LEFT + i as f64 * bar_w;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{}\">\
             <title>≤ {} : {count}</title></rect>",
            x + 1.0,
            TOP + plot_h - height,
            (bar_w - 2.0).max(1.0),
            PALETTE[0],
            ms(*bound)
        );
        if i % every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + bar_w / 2.0,
                HEIGHT - BOTTOM + 16.0,
                label(*bound)
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">ms (upper bound of each bucket, log scale)</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
    svg.push_str("</svg>");
    svg
}

fn svg_open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\"><title>{t}</title>\
         <text x=\"{LEFT}\" y=\"13\" style=\"font-weight:bold;font-size:12px\">{t}</text>",
        t = escape(title)
    )
}

fn load(average: Option<[f64; 3]>) -> String {
    average.map_or("unknown".to_owned(), |[a, b, c]| {
        format!("{a:.2} {b:.2} {c:.2}")
    })
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 8.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(10.4), 12.0);
        assert_eq!(nice_ceiling(1234.0), 1500.0);
        assert!((nice_ceiling(0.3) - 0.3).abs() < 1e-9);
        assert!((nice_ceiling(0.31) - 0.4).abs() < 1e-9);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn a_line_chart_draws_each_series_inside_the_plot() {
        let series = [
            Series {
                name: "a<b".into(),
                points: vec![(0.0, 0.0), (5.0, 90.0), (10.0, 40.0)],
            },
            Series {
                name: "single".into(),
                points: vec![(3.0, 10.0)],
            },
        ];
        let svg = line_chart("t", "seconds", &series);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        // The highest point (90 of an axis up to 100) is just below the plot's top edge.
        let top_y = TOP + (HEIGHT - TOP - BOTTOM) * 0.1;
        assert!(
            svg.contains(&format!(
                "{:.1},{top_y:.1}",
                LEFT + (WIDTH - LEFT - RIGHT) * 0.5
            )),
            "{svg}"
        );
    }

    #[test]
    fn a_histogram_has_one_bar_per_bucket() {
        let latencies = Latencies::new(vec![1.0, 2.0, 2.5, 40.0]);
        let svg = histogram("accept", &latencies);
        assert_eq!(svg.matches("<rect").count(), latencies.histogram().len());
        assert!(svg.contains("p50 2.0 ms"), "{svg}");
        let empty = histogram("none", &Latencies::default());
        assert!(empty.contains("no samples") && !empty.contains("<rect"));
    }
}
