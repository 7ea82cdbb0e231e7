//! Images for vision models: decoding with the `image` crate (PNG, JPEG; grayscale and alpha
//! become RGB), resizing as the model folder says (squash to a square, or shorter side then center
//! crop), normalization by mean/std, and seeded training-time augmentation.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbImage};
use rand::Rng;
use rand::rngs::StdRng;

use crate::{DataError, resample};

/// The resampling filter of resizes, as the reference processors name them (PIL's `resample`,
/// timm's `interpolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Nearest,
    Bilinear,
    #[default]
    Bicubic,
}

impl Interpolation {
    /// PIL's `resample` codes (0 nearest, 2 bilinear, 3 bicubic).
    pub fn from_pil(code: u64) -> Option<Self> {
        match code {
            0 => Some(Self::Nearest),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            _ => None,
        }
    }

    /// timm's names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "nearest" => Some(Self::Nearest),
            "bilinear" => Some(Self::Bilinear),
            "bicubic" => Some(Self::Bicubic),
            _ => None,
        }
    }

    /// The PIL `resample` code.
    pub fn pil_code(self) -> u64 {
        match self {
            Self::Nearest => 0,
            Self::Bilinear => 2,
            Self::Bicubic => 3,
        }
    }

    /// The timm name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
        }
    }

    /// The resize as Pillow does it (`crate::resample`); nearest through the `image` crate.
    pub fn resize(self, image: &RgbImage, width: u32, height: u32) -> RgbImage {
        if image.dimensions() == (width, height) {
            return image.clone();
        }
        match self {
            Self::Nearest => imageops::resize(image, width, height, FilterType::Nearest),
            Self::Bilinear => resample::resize(image, width, height, resample::BILINEAR),
            Self::Bicubic => resample::resize(image, width, height, resample::BICUBIC),
        }
    }
}

/// Where a center crop starts when the margin is odd: torchvision's `CenterCrop` (timm, and
/// graft's own configs) rounds half of it to even, transformers' processors floor it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropOffset {
    /// `(margin) // 2` (transformers' `center_crop`; runs made before this was recorded).
    #[default]
    Floor,
    /// `int(round(margin / 2))` with Python's round half to even (torchvision).
    RoundHalfEven,
}

impl CropOffset {
    fn of(self, margin: u32) -> u32 {
        let half = margin / 2;
        match self {
            Self::RoundHalfEven if margin % 2 == 1 && half % 2 == 1 => half + 1,
            _ => half,
        }
    }
}

/// How images become model inputs: the one image transform of model folders, runs and the data
/// pipeline (read from timm's `pretrained_cfg`, transformers' `preprocessor_config.json` or
/// graft's vision config, stored in `graft.json`, written again by exports).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageTransform {
    /// Side of the square the model sees.
    pub image_size: usize,
    /// `Some(s)`: resize the shorter side to `s` (or the whole image to `s` x `s` with
    /// `squash_before_crop`), then crop the center; `None`: resize the whole image to
    /// `image_size` x `image_size`.
    pub resize_shorter: Option<usize>,
    /// With `resize_shorter`: squash the whole image to that square before the crop instead of
    /// keeping its aspect (transformers' DeiT processor, timm's `crop_mode = "squash"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub squash_before_crop: bool,
    /// Per-channel mean and std of pixels scaled to [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The resizes' filter (bicubic in runs made before it was recorded).
    #[serde(default)]
    pub interpolation: Interpolation,
    /// With `resize_shorter`: the share of the resized image the crop keeps (timm's `crop_pct`),
    /// which sets the resize at other sizes; runs made before it was recorded derive it
    /// ([`ImageTransform::crop_share`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_pct: Option<f64>,
    /// Where the center crop starts (floor in runs made before it was recorded).
    #[serde(default)]
    pub crop_offset: CropOffset,
    /// transformers' ConvNeXt processor crops by `crop_pct` only below this side (384) and
    /// resizes the whole image at it and above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crops_below: Option<usize>,
}

/// Training-time augmentation, all drawn from a seeded generator.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Augment {
    /// Random resized crop: the crop's area fraction range (torchvision's default is 0.08..1).
    pub crop_scale: Option<(f64, f64)>,
    pub horizontal_flip: bool,
    /// Colour jitter strengths for brightness, contrast and saturation (0 = off).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

/// Reads an image file as RGB; an unreadable or corrupt file is an error naming it.
pub fn load_rgb(path: &Path) -> Result<RgbImage, DataError> {
    read_rgb(path).map(|(image, _)| image)
}

/// Reads an image file as RGB, with the file's bytes (for content keys).
pub fn read_rgb(path: &Path) -> Result<(RgbImage, Vec<u8>), DataError> {
    if !path.is_file() {
        return Err(DataError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((decode_rgb(&bytes, path)?, bytes))
}

/// The most pixels an image may declare (10^8: 10000 x 10000; as RGB, 300 MB).
pub const MAX_PIXELS: u64 = 100_000_000;

/// The most the decoder may allocate for one image (the `image` crate's default).
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// Decodes an encoded image (PNG, JPEG) held in memory; `origin` names it in errors. An image
/// declaring more than [`MAX_PIXELS`] pixels, or needing more than [`MAX_DECODE_BYTES`] to decode,
/// is refused before its pixels are allocated.
pub fn decode_rgb(bytes: &[u8], origin: &Path) -> Result<RgbImage, DataError> {
    let image_error = |message: String| DataError::Image {
        path: origin.to_path_buf(),
        message,
    };
    let reader = || {
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| DataError::Io {
                path: origin.to_path_buf(),
                source,
            })?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_DECODE_BYTES);
        reader.limits(limits);
        Ok::<_, DataError>(reader)
    };
    // The header alone says how large the image is.
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| image_error(e.to_string()))?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(image_error(format!(
            "{width} x {height} pixels is more than the {MAX_PIXELS} graft reads"
        )));
    }
    let image = reader()?.decode().map_err(|e| image_error(e.to_string()))?;
    Ok(to_rgb(image))
}

fn to_rgb(image: DynamicImage) -> RgbImage {
    // Grayscale is repeated over the three channels; alpha is dropped.
    image.to_rgb8()
}

impl ImageTransform {
    /// The transform at another input side, as timm's `resolve_data_config` and transformers'
    /// processors size it: the crop keeps its share of the image (the resize to
    /// `floor(size / crop_pct)`, then a `size` center crop), or the whole image is resized to the
    /// square; `crop_pct` replaces the folder's share. At the folder's own size and share it is
    /// the folder's transform.
    pub fn at_size(&self, size: usize, crop_pct: Option<f64>) -> ImageTransform {
        if size == self.image_size && crop_pct.is_none_or(|c| Some(c) == self.crop_pct) {
            return self.clone();
        }
        let crops = crop_pct.is_some() || self.crops_below.is_none_or(|limit| size < limit);
        let crop_pct = crop_pct.or(self.crop_share());
        ImageTransform {
            image_size: size,
            resize_shorter: crop_pct
                .filter(|_| crops)
                .map(|c| (size as f64 / c).floor() as usize),
            crop_pct,
            ..self.clone()
        }
    }

    /// The crop's share of the resized image: `crop_pct`, else `image_size / resize_shorter`.
    pub fn crop_share(&self) -> Option<f64> {
        self.crop_pct.or(self
            .resize_shorter
            .map(|r| self.image_size as f64 / r as f64))
    }

    /// The image resized (and cropped) to the model's square input.
    pub fn resize(&self, image: &RgbImage) -> RgbImage {
        let size = self.image_size as u32;
        match self.resize_shorter {
            None => self.interpolation.resize(image, size, size),
            Some(shorter) => {
                // The longer side as torchvision's and transformers' resizes compute it:
                // truncated, `int(shorter * long / short)`.
                let (w, h) = image.dimensions();
                let (short, shorter) = (w.min(h) as u64, shorter as u64);
                let side = |n: u32| match self.squash_before_crop {
                    true => (shorter as u32).max(size),
                    false => ((shorter * n as u64 / short) as u32).max(size),
                };
                let (nw, nh) = (side(w), side(h));
                let resized = self.interpolation.resize(image, nw, nh);
                let (x, y) = (
                    self.crop_offset.of(nw - size),
                    self.crop_offset.of(nh - size),
                );
                imageops::crop_imm(&resized, x, y, size, size).to_image()
            }
        }
    }

    /// Normalized CHW values of an image already at the model's size.
    pub fn normalize(&self, image: &RgbImage) -> Vec<f32> {
        let (w, h) = image.dimensions();
        let plane = (w * h) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, pixel) in image.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (pixel[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// Resize + normalize for evaluation and prediction.
    pub fn apply(&self, image: &RgbImage) -> Vec<f32> {
        self.normalize(&self.resize(image))
    }

    /// Augments, resizes and normalizes for training.
    pub fn apply_augmented(
        &self,
        image: &RgbImage,
        augment: &Augment,
        rng: &mut StdRng,
    ) -> Vec<f32> {
        let mut image = match augment.crop_scale {
            Some((low, high)) => random_resized_crop(image, self.image_size, (low, high), rng),
            None => self.resize(image),
        };
        if augment.horizontal_flip && rng.random_bool(0.5) {
            imageops::flip_horizontal_in_place(&mut image);
        }
        jitter(&mut image, augment, rng);
        self.normalize(&image)
    }
}

/// torchvision's `RandomResizedCrop` (ratio 3/4 to 4/3): up to ten tries at a random area and
/// aspect ratio, else the whole image center-cropped to a valid ratio.
fn random_resized_crop(
    image: &RgbImage,
    size: usize,
    (low, high): (f64, f64),
    rng: &mut StdRng,
) -> RgbImage {
    let (w, h) = image.dimensions();
    let area = (w * h) as f64;
    let (log_low, log_high) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    let mut chosen = None;
    for _ in 0..10 {
        let target = area * rng.random_range(low..=high);
        let ratio = rng.random_range(log_low..=log_high).exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.random_range(0..=w - cw);
            let y = rng.random_range(0..=h - ch);
            chosen = Some((x, y, cw, ch));
            break;
        }
    }
    let (x, y, cw, ch) = chosen.unwrap_or_else(|| {
        let side = w.min(h);
        ((w - side) / 2, (h - side) / 2, side, side)
    });
    let crop = imageops::crop_imm(image, x, y, cw, ch).to_image();
    Interpolation::Bicubic.resize(&crop, size as u32, size as u32)
}

/// Brightness, contrast and saturation jitter, each a factor drawn from [1 - s, 1 + s].
fn jitter(image: &mut RgbImage, augment: &Augment, rng: &mut StdRng) {
    let mut factor =
        |strength: f32| (strength > 0.0).then(|| rng.random_range(1.0 - strength..=1.0 + strength));
    let (brightness, contrast, saturation) = (
        factor(augment.brightness),
        factor(augment.contrast),
        factor(augment.saturation),
    );
    if brightness.is_none() && contrast.is_none() && saturation.is_none() {
        return;
    }
    let gray = |p: &image::Rgb<u8>| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
    let mean_gray = image.pixels().map(gray).sum::<f32>() / (image.width() * image.height()) as f32;
    for pixel in image.pixels_mut() {
        let mut v = [pixel[0] as f32, pixel[1] as f32, pixel[2] as f32];
        if let Some(b) = brightness {
            v = v.map(|c| c * b);
        }
        if let Some(c) = contrast {
            v = v.map(|x| (x - mean_gray) * c + mean_gray);
        }
        if let Some(s) = saturation {
            let g = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
            v = v.map(|x| (x - g) * s + g);
        }
        for c in 0..3 {
            pixel[c] = v[c].round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// File extensions read as images in an image folder.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// The images of an image folder, `root/<class>/<image>`, as examples whose text is the image
/// path and whose label is the class folder's name, sorted by class and file name. A class folder
/// without images, or a root without class folders, is an error naming it.
pub fn read_image_folder(root: &Path) -> Result<Vec<crate::TextExample>, DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    if !root.is_dir() {
        return Err(DataError::NotFound {
            path: root.to_path_buf(),
        });
    }
    let mut classes: Vec<std::path::PathBuf> = std::fs::read_dir(root)
        .map_err(io(root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::Labels {
            path: root.to_path_buf(),
            message: "no class folders (expected root/<class>/<image>.png)".into(),
        });
    }
    let mut examples = Vec::new();
    for class in classes {
        let label = class
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut images: Vec<std::path::PathBuf> = std::fs::read_dir(&class)
            .map_err(io(&class))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        if images.is_empty() {
            return Err(DataError::EmptyClass {
                path: class.clone(),
                label,
            });
        }
        images.sort();
        examples.extend(images.into_iter().map(|path| crate::TextExample {
            text: path.to_string_lossy().to_string(),
            label: Some(label.clone()),
            line: 0,
            bytes: None,
            pair: None,
            negative: None,
        }));
    }
    Ok(examples)
}

/// Image paths in a CSV/JSONL/parquet table are taken relative to the table's folder (images held
/// in the table itself, and empty fields, stay as they are).
pub fn resolve_paths(examples: &mut [crate::TextExample], table: &Path) {
    let base = table.parent().unwrap_or(Path::new("."));
    for example in examples {
        let path = Path::new(&example.text);
        if path.is_relative() && example.bytes.is_none() && !example.text.trim().is_empty() {
            example.text = base.join(path).to_string_lossy().to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn image_folder_lists_classes_and_refuses_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        for (class, n) in [("cat", 2), ("dog", 1)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            for i in 0..n {
                RgbImage::new(2, 2)
                    .save(dir.path().join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        let examples = read_image_folder(dir.path()).unwrap();
        assert_eq!(examples.len(), 3);
        assert_eq!(examples[2].label.as_deref(), Some("dog"));
        std::fs::create_dir(dir.path().join("emu")).unwrap();
        let error = read_image_folder(dir.path()).unwrap_err().to_string();
        assert!(error.contains("emu"), "{error}");
    }

    fn preprocess() -> ImageTransform {
        ImageTransform {
            image_size: 4,
            resize_shorter: None,
            squash_before_crop: false,
            interpolation: Interpolation::Bicubic,
            mean: [0.5; 3],
            std: [0.25; 3],
            crop_pct: None,
            crop_offset: CropOffset::Floor,
            crops_below: None,
        }
    }

    #[test]
    fn grayscale_becomes_rgb_and_normalizes_per_channel() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([255])));
        let rgb = to_rgb(gray);
        let values = preprocess().apply(&rgb);
        assert_eq!(values.len(), 3 * 16);
        assert!(values.iter().all(|&v| (v - 2.0).abs() < 1e-6));
    }

    #[test]
    fn augmentation_is_seeded() {
        let mut image = RgbImage::new(16, 12);
        for (x, y, p) in image.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 15) as u8, (y * 20) as u8, 100]);
        }
        let augment = Augment {
            crop_scale: Some((0.5, 1.0)),
            horizontal_flip: true,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
        };
        let run =
            |seed| preprocess().apply_augmented(&image, &augment, &mut StdRng::seed_from_u64(seed));
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn corrupt_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        std::fs::write(&path, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let error = load_rgb(&path).unwrap_err().to_string();
        assert!(error.contains("broken.png"), "{error}");
    }
}
