//! Pictures end to end: what the notebook receives from `evcxr_display`, what files hold, and
//! that chart text needs no system font library.

use base64::Engine;
use candle_core::{DType, Device, Tensor};
use diffusion::display::output::evcxr_block;
use diffusion::display::{loss_chart, schedule_chart, Figure, ImageGrid, LineChart};
use diffusion::Schedule;

/// Splits an evcxr block into (mime, content), checking the protocol lines.
fn parse_block(block: &str) -> (String, String) {
    let rest = block
        .strip_prefix("EVCXR_BEGIN_CONTENT ")
        .expect("block must start with EVCXR_BEGIN_CONTENT");
    let (mime, rest) = rest.split_once('\n').expect("mime line");
    let content = rest
        .strip_suffix("\nEVCXR_END_CONTENT\n")
        .expect("block must end with EVCXR_END_CONTENT");
    (mime.to_string(), content.to_string())
}

/// 15 images of 16 x 16, image `i` filled with `v_i = -1 + 2 i / 14`.
fn ramp() -> Tensor {
    let values: Vec<f32> = (0..15)
        .flat_map(|i| std::iter::repeat_n(-1.0 + 2.0 * i as f32 / 14.0, 256))
        .collect();
    Tensor::from_vec(values, (15, 1, 16, 16), &Device::Cpu).unwrap()
}

#[test]
fn a_strip_of_15_images_has_the_course_layout() {
    let grid = ImageGrid::new(&ramp(), 15).unwrap();
    let png = grid.to_png().unwrap();
    let img = image::load_from_memory(&png).unwrap().to_luma8();
    // 15 cells of 16 * 4 = 64 px with 14 gaps of 2 px.
    assert_eq!(img.dimensions(), (15 * 64 + 14 * 2, 64));
    for i in 0..15u32 {
        // (v_i + 1) / 2 * 255 = i / 14 * 255, rounded half away from zero.
        let expected = (i as f64 / 14.0 * 255.0).round() as u8;
        let x0 = i * 66;
        for (x, y) in [(x0, 0), (x0 + 63, 63), (x0 + 32, 17)] {
            assert_eq!(
                img.get_pixel(x, y).0[0],
                expected,
                "image {i} at ({x}, {y})"
            );
        }
        if i < 14 {
            assert_eq!(img.get_pixel(x0 + 64, 10).0[0], 255, "gap after image {i}");
        }
    }
}

#[test]
fn a_10_by_15_grid() {
    let x = Tensor::zeros((150, 1, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let grid = ImageGrid::new(&x, 15).unwrap();
    assert_eq!((grid.rows(), grid.columns()), (10, 15));
    assert_eq!(grid.cell_origin(149), Some((14 * 66, 9 * 66)));
    let img = image::load_from_memory(&grid.to_png().unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (988, 10 * 64 + 9 * 2));
}

#[test]
fn grid_display_block_carries_a_base64_png() {
    let grid = ImageGrid::new(&ramp(), 5).unwrap();
    let (mime, content) = grid.evcxr_content().unwrap();
    let (mime2, content2) = parse_block(&evcxr_block(mime, &content));
    assert_eq!(mime2, "image/png");
    assert!(!content2.contains('\n'));
    let png = base64::engine::general_purpose::STANDARD
        .decode(content2)
        .unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (5 * 64 + 4 * 2, 3 * 64 + 2 * 2)
    );
}

#[test]
fn chart_display_block_is_svg_text_with_labels() {
    let s = Schedule::course(&Device::Cpu).unwrap();
    let chart = schedule_chart(&s).unwrap();
    let (mime, content) = chart.evcxr_content().unwrap();
    let (mime, svg) = parse_block(&evcxr_block(mime, &content));
    assert_eq!(mime, "image/svg+xml");
    for text in [
        "Noise schedule (T = 150)",
        "timestep t",
        "a_bar",
        "sqrt(1 - a_bar)",
    ] {
        assert!(
            svg.contains(&format!(">\n{text}\n</text>")),
            "{text} missing"
        );
    }
}

#[test]
fn training_cell_figure() {
    let losses: Vec<(usize, f32)> = (0..300).map(|i| (i, 1.0 / (1.0 + i as f32))).collect();
    let grid = ImageGrid::new(&ramp(), 15).unwrap();
    let fig = Figure::new()
        .title("Epoch 0 | Step 200")
        .push_pre("Epoch 0 | Step 100 | Loss: 0.0099\nEpoch 0 | Step 200 | Loss: 0.0050")
        .push_grid("samples at step 100", &grid)
        .unwrap()
        .push_grid("samples at step 200", &grid)
        .unwrap()
        .push_chart("loss", &loss_chart(&losses, 25).unwrap())
        .unwrap();
    let (mime, html) = fig.evcxr_content().unwrap();
    assert_eq!(mime, "text/html");
    assert_eq!(html.matches("<img").count(), 2);
    assert_eq!(html.matches("<svg").count(), 1);
    assert!(html.contains("samples at step 100"));
    let dir = tempfile::tempdir().unwrap();
    fig.save(dir.path().join("figure.html")).unwrap();
    let page = std::fs::read_to_string(dir.path().join("figure.html")).unwrap();
    assert!(page.contains(&html));
}

#[test]
fn chart_png_and_svg_files() {
    let dir = tempfile::tempdir().unwrap();
    let chart = LineChart::new("t").series_y("y", [3.0, 1.0, 2.0]);
    chart.save(dir.path().join("a/chart.png")).unwrap();
    chart.save(dir.path().join("a/chart.svg")).unwrap();
    let png = image::open(dir.path().join("a/chart.png")).unwrap();
    assert_eq!((png.width(), png.height()), (640, 400));
    let svg = std::fs::read_to_string(dir.path().join("a/chart.svg")).unwrap();
    assert!(svg.trim_end().ends_with("</svg>"));
}

/// The crate must not depend on system font libraries: text goes through the embedded font.
#[test]
fn no_system_font_libraries_in_the_dependency_tree() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "diffusion",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(tree.contains("ab_glyph"), "ab_glyph expected in:\n{tree}");
    for banned in ["freetype", "fontconfig", "font-kit", "yeslogic"] {
        assert!(
            !tree.contains(banned),
            "{banned} found in the dependency tree"
        );
    }
}
