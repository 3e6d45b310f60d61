//! Charts for sweeps and benchmarks: line charts written as SVG, side by side, with
//! logarithmic axes where a quantity spans decades (connection counts, latencies).
//!
//! SVG because it is text: charts live in the repository next to the command that made
//! them, and their diffs can be read.

use std::io;
use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its points, `(x, y)`.
    pub points: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Its caption.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const PANEL_WIDTH: u32 = 560;
/// Tick labels and axis names, in pixels: readable at the width the docs show the charts.
const LABEL_SIZE: u32 = 15;
const HEIGHT: u32 = 420;
/// The charts' colours, in the order series take them (the first eight of the common
/// "category10" palette); the timeline example draws its tracks with them too.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Writes `panels` into an SVG file at `path`, two to a row.
pub fn write_svg(path: &Path, panels: &[Panel]) -> io::Result<()> {
    let columns = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (PANEL_WIDTH * columns as u32, HEIGHT * rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(to_io)?;
    let areas = root.split_evenly((rows, columns));
    for (area, panel) in areas.iter().zip(panels) {
        let (x, y) = (bounds(panel, |(x, _)| x, panel.log_x), bounds(panel, |(_, y)| y, panel.log_y));
        match (panel.log_x, panel.log_y) {
            (true, true) => draw(area, panel, x.log_scale(), y.log_scale()),
            (true, false) => draw(area, panel, x.log_scale(), y),
            (false, true) => draw(area, panel, x, y.log_scale()),
            (false, false) => draw(area, panel, x, y),
        }?;
    }
    root.present().map_err(to_io)
}

/// The range of one coordinate over all points, padded; positive for log axes.
fn bounds(panel: &Panel, pick: fn(&(f64, f64)) -> &f64, log: bool) -> Range<f64> {
    let values = panel.series.iter().flat_map(|series| series.points.iter().map(pick)).copied();
    let values: Vec<f64> = values.filter(|value| value.is_finite() && (!log || *value > 0.0)).collect();
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match (low.is_finite(), log) {
        (false, _) => 1.0..10.0,
        // Whole decades, so a log axis always has labelled powers of ten; the low end a hair
        // below its decade, or plotters leaves that lowest decade unlabelled.
        (true, true) => {
            10f64.powf(low.log10().floor()) * 0.999..10f64.powf(high.log10().ceil()).max(low * 10.0)
        }
        (true, false) => (low.min(0.0))..(high * 1.1).max(low + 1.0),
    }
}

fn draw<X, Y>(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    x: X,
    y: Y,
) -> io::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(to_io)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_labels(8)
        .y_labels(8)
        .max_light_lines(2)
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .x_label_formatter(&|value| short_number(*value))
        .y_label_formatter(&|value| short_number(*value))
        .label_style(("sans-serif", LABEL_SIZE))
        .axis_desc_style(("sans-serif", LABEL_SIZE))
        .draw()
        .map_err(to_io)?;
    let count = panel.series.len() as u32;
    for (index, series) in panel.series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        // Earlier series are drawn wider, so a later one on the same values (the reactor's
        // one thread over the iterative server's) leaves them visible at its edges.
        let width = 2 + 2 * (count - 1 - index as u32).min(2);
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| (!panel.log_x || *x > 0.0) && (!panel.log_y || *y > 0.0))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))
            .map_err(to_io)?
            .label(series.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width)));
        chart
            .draw_series(points.into_iter().map(|point| Circle::new(point, width + 1, color.filled())))
            .map_err(to_io)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", LABEL_SIZE))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(to_io)
}

/// 12000 -> "12k", 0.5 -> "0.5".
fn short_number(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{}M", trim(value / 1e6)),
        v if v >= 1e3 => format!("{}k", trim(value / 1e3)),
        _ => trim(value),
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn to_io(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers on axes are short.
    #[test]
    fn short_numbers() {
        assert_eq!(short_number(12_000.0), "12k");
        assert_eq!(short_number(1_500_000.0), "1.5M");
        assert_eq!(short_number(0.5), "0.5");
        assert_eq!(short_number(100.0), "100");
    }

    /// A chart with log and linear panels is written as SVG.
    #[test]
    fn writes_svg() {
        let path = std::env::temp_dir().join(format!("evloop-chart-{}.svg", std::process::id()));
        let series = Series { name: "a".into(), points: vec![(1.0, 10.0), (10.0, 100.0), (100.0, 50.0)] };
        let panel = Panel {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: true,
            log_y: true,
            series: vec![series],
        };
        let linear = Panel { log_x: false, log_y: false, ..panel.clone() };
        write_svg(&path, &[panel, linear]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{}", &svg[..200.min(svg.len())]);
    }
}
