//! A line chart as SVG text: replies/s against offered load, one line per responder, log-scaled
//! load axis (the rates rise geometrically), plus the "every request answered" diagonal.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// (offered frames/s, replies/s)
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 760.0;
const H: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// "1.2M", "350k", "900".
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Renders the chart; series without points are listed in the legend only.
pub fn line_chart(title: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, 0.0f64, 0.0f64);
    for &(x, y) in all {
        if x > 0.0 {
            x_min = x_min.min(x);
            x_max = x_max.max(x);
        }
        y_max = y_max.max(y);
    }
    if x_max <= 0.0 {
        x_min = 1e3;
        x_max = 1e6;
    }
    let (lx0, lx1) = (
        x_min.log10().floor(),
        x_max.log10().ceil().max(x_min.log10().floor() + 1.0),
    );
    let y_top = nice_ceiling(y_max.max(x_max).max(1.0));
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x.max(10f64.powf(lx0)).log10() - lx0) / (lx1 - lx0) * pw;
    let py = |y: f64| TOP + ph - (y / y_top).clamp(0.0, 1.0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    // Grid and ticks.
    let mut decade = lx0;
    while decade <= lx1 + 1e-9 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(decade);
            if v.log10() > lx1 + 1e-9 {
                break;
            }
            let x = px(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                si(v)
            );
        }
        decade += 1.0;
    }
    for i in 0..=5 {
        let v = y_top * f64::from(i) / 5.0;
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            si(v)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (requests/s, log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">replies/s</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Diagonal: every request answered.
    let (d0, d1) = (10f64.powf(lx0), 10f64.powf(lx1).min(y_top));
    let _ = writeln!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 4"/>"##,
        px(d0),
        py(d0),
        px(d1),
        py(d1)
    );
    for (i, ser) in series.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = ser.points.iter().copied().filter(|p| p.0 > 0.0).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !pts.is_empty() {
            let coords: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                ser.color,
                coords.join(" ")
            );
            for &(x, y) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                    px(x),
                    py(y),
                    ser.color
                );
            }
        }
        let ly = TOP + 14.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            ser.color,
            lx + 24.0,
            ly + 4.0,
            escape(&ser.name)
        );
    }
    let ly = TOP + 14.0 + 20.0 * series.len() as f64;
    let lx = LEFT + pw + 12.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#999" stroke-dasharray="4 4"/><text x="{:.1}" y="{:.1}">all answered</text>"##,
        lx + 18.0,
        lx + 24.0,
        ly + 4.0
    );
    s.push_str("</svg>\n");
    s
}

/// The smallest 1/2/5×10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let base = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * base >= v {
            return m * base;
        }
    }
    10.0 * base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers_in(attr: &str, svg: &str) -> Vec<f64> {
        svg.split(&format!("{attr}=\""))
            .skip(1)
            .filter_map(|rest| rest.split('"').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn one_polyline_per_series_with_points_inside_the_plot() {
        let series = vec![
            Series {
                name: "XDP <driver>".into(),
                color: "#d62728",
                points: vec![(1e4, 1e4), (1e5, 9e4), (1e6, 4e5)],
            },
            Series {
                name: "kernel".into(),
                color: "#1f77b4",
                points: vec![(1e4, 1e4), (2e5, 1e5)],
            },
            Series {
                name: "fallback".into(),
                color: "#2ca02c",
                points: vec![],
            },
        ];
        let svg = line_chart("ARP", &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("XDP &lt;driver&gt;"));
        assert!(svg.contains("fallback"));
        for cx in numbers_in("cx", &svg) {
            assert!((LEFT..=W - RIGHT).contains(&cx), "cx {cx}");
        }
        for cy in numbers_in("cy", &svg) {
            assert!((TOP..=H - BOTTOM).contains(&cy), "cy {cy}");
        }
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn nice_ceilings_and_si_labels() {
        assert_eq!(nice_ceiling(730_000.0), 1_000_000.0);
        assert_eq!(nice_ceiling(1_300_000.0), 2_000_000.0);
        assert_eq!(nice_ceiling(5_000.0), 5_000.0);
        assert_eq!(si(1_250_000.0), "1.2M");
        assert_eq!(si(350_000.0), "350k");
        assert_eq!(si(900.0), "900");
    }
}
