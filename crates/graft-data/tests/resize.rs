//! graft's eval resize against timm's through PIL (`tests/data/resize/timm.json`, made by
//! `scripts/golden/make_resize_goldens.py`): two photos, one wider and one taller than square, at
//! sizes smaller and larger than a 224 px model's input, and two small cuts of them that every
//! size enlarges (one of them shrinking its height, which Pillow resamples first); bicubic and
//! bilinear, center crops and squashes. Every pixel is Pillow's (Pillow 13).

use std::path::PathBuf;

use base64::Engine;
use graft_data::image::{CropOffset, ImageTransform, Interpolation, read_rgb};
use image::RgbImage;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The script's photos: chelsea.png as it is, coffee.png cropped to 260 x 400 at (70, 0), and
/// cuts of them: 48 x 32 of chelsea at (200, 100), 24 x 60 of the coffee cut at (100, 150).
fn source(name: &str) -> RgbImage {
    let vision = golden_dir().join("../graft-model/tests/golden/vision");
    let cut =
        |image: &RgbImage, x, y, w, h| image::imageops::crop_imm(image, x, y, w, h).to_image();
    let chelsea = || read_rgb(&vision.join("chelsea.png")).unwrap().0;
    let coffee = || {
        cut(
            &read_rgb(&vision.join("coffee.png")).unwrap().0,
            70,
            0,
            260,
            400,
        )
    };
    match name {
        "chelsea.png" => chelsea(),
        "coffee-260x400" => coffee(),
        "chelsea-48x32" => cut(&chelsea(), 200, 100, 48, 32),
        "coffee-24x60" => cut(&coffee(), 100, 150, 24, 60),
        other => panic!("unknown source {other}"),
    }
}

#[test]
fn eval_resize_is_timms_through_pil() {
    let text = std::fs::read_to_string(golden_dir().join("tests/data/resize/timm.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in golden["cases"].as_array().unwrap() {
        let size = case["size"].as_u64().unwrap() as usize;
        let crop_pct = case["crop_pct"].as_f64().unwrap();
        let squash = case["crop_mode"] == "squash";
        // timm's squash resizes the whole image to floor(size / crop_pct) before its crop.
        let scale_size = (size as f64 / crop_pct).floor() as usize;
        let preprocess = ImageTransform {
            image_size: size,
            resize_shorter: (!squash || crop_pct < 1.0).then_some(scale_size),
            squash_before_crop: squash,
            mean: [0.0; 3],
            std: [1.0; 3],
            interpolation: Interpolation::from_name(case["interpolation"].as_str().unwrap())
                .unwrap(),
            crop_pct: Some(crop_pct),
            crop_offset: CropOffset::RoundHalfEven,
            crops_below: None,
        };
        let got = preprocess.resize(&source(case["image"].as_str().unwrap()));
        assert_eq!(got.dimensions(), (size as u32, size as u32));
        let want = base64::engine::general_purpose::STANDARD
            .decode(case["rgb"].as_str().unwrap())
            .unwrap();
        let max = got
            .as_raw()
            .iter()
            .zip(&want)
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap();
        let what = format!(
            "{} {size} crop_pct {crop_pct} {} {}",
            case["image"], case["interpolation"], case["crop_mode"]
        );
        assert_eq!(max, 0, "{what}: pixels up to {max}/255 from Pillow's");
    }
}
