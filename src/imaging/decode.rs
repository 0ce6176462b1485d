//! Bytes → upright 8-bit RGB.
//!
//! Format is sniffed from the magic bytes (never the file extension or Content-Type),
//! dimensions are read from the header and refused above a pixel limit before any pixel
//! is decoded, EXIF orientation is applied, and every colour model is reduced to RGB8:
//! grayscale is replicated, CMYK is converted by the JPEG decoder, 16-bit is rounded, and
//! alpha is composited on white (the controlnet_aux HWC3 convention).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::RowFailure;

/// Decode `bytes` into an upright RGB image.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, RowFailure> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| RowFailure::new("decode_error", e.to_string()))?;
    if reader.format().is_none() {
        return Err(RowFailure::new(
            "not_an_image",
            format!("unrecognised file signature {}", signature_hex(bytes)),
        ));
    } // The declared size straight from the header bytes, before any decoder is built: a
      // decompression bomb is refused even when the rest of its file is junk.
    if let Ok(size) = imagesize::blob_size(bytes) {
        let pixels = size.width as u64 * size.height as u64;
        if pixels > max_pixels {
            return Err(RowFailure::new(
                "too_many_pixels",
                format!(
                    "{}x{} = {pixels} pixels is over the limit of {max_pixels} (--max-pixels)",
                    size.width, size.height
                ),
            ));
        }
    }
    let mut reader = reader;
    let mut limits = image::Limits::default();
    // The decoder's allocation limit must not be the thing that refuses a large image:
    // the pixel limit below is the documented one.
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(64 << 20));
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| RowFailure::new("decode_error", e.to_string()))?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(RowFailure::new(
            "too_many_pixels",
            format!("{w}x{h} = {pixels} pixels is over the limit of {max_pixels} (--max-pixels)"),
        ));
    }
    if w == 0 || h == 0 {
        return Err(RowFailure::new(
            "decode_error",
            format!("empty image {w}x{h}"),
        ));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = match decode_jpeg_libjpeg_turbo(bytes) {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => DynamicImage::from_decoder(decoder)
            .map_err(|e| RowFailure::new("decode_error", e.to_string()))?,
    };
    img.apply_orientation(orientation);
    Ok(to_rgb_on_white(img))
}

thread_local! {
    /// A decoded image's buffer handed back by [`recycle`], for this thread's next JPEG.
    static SPARE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hand a decoded image that is no longer needed back to this thread's decoder (kept
/// when it is at most 32 MiB, so an occasional huge image does not stay resident).
pub fn recycle(img: RgbImage) {
    let v = img.into_raw();
    if v.capacity() <= 32 << 20 {
        SPARE.with(|s| *s.borrow_mut() = v);
    }
}

/// A JPEG decoded by libjpeg-turbo, the decoder of PIL and OpenCV (ISLOW IDCT, fancy
/// upsampling): the pixels equal their `Image.open().convert("RGB")` / `imread`, which
/// zune-jpeg's do not (up to 8 levels on 12-17 % of values of ordinary photos, and up
/// to 96 in the last column of a 640-wide 4:2:0 image). `None` — the `image` crate then
/// decodes, and names any damage — for what is not a JPEG, for colour spaces it converts
/// itself (CMYK, YCCK), lossless JPEGs, and any libjpeg-turbo error or warning (a
/// truncated or corrupt file).
pub fn decode_jpeg_libjpeg_turbo(bytes: &[u8]) -> Option<RgbImage> {
    use turbojpeg::Colorspace;
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return None;
    }
    let mut d = turbojpeg::Decompressor::new().ok()?;
    let header = d.read_header(bytes).ok()?;
    if !matches!(
        header.colorspace,
        Colorspace::YCbCr | Colorspace::Gray | Colorspace::RGB
    ) || header.is_lossless
    {
        return None;
    }
    let (w, h) = (header.width, header.height);
    let n = w.checked_mul(h)?.checked_mul(3)?;
    // Decode into this thread's recycled buffer when there is one: libjpeg-turbo writes
    // every byte, so only a part that grows needs initialising (no 1 MB memset per photo).
    let mut px = SPARE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if px.len() >= n {
        px.truncate(n);
    } else {
        px.resize(n, 0);
    }
    let out = turbojpeg::Image {
        pixels: &mut px[..],
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    d.decompress(bytes, out).ok()?;
    RgbImage::from_raw(u32::try_from(w).ok()?, u32::try_from(h).ok()?, px)
}

fn signature_hex(bytes: &[u8]) -> String {
    let n = bytes.len().min(8);
    let hex: Vec<String> = bytes[..n].iter().map(|b| format!("{b:02x}")).collect();
    format!("[{}] ({} bytes)", hex.join(" "), bytes.len())
}

/// Reduce any colour model to RGB8, compositing alpha on white.
pub fn to_rgb_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (src, dst) in rgba.pixels().zip(out.pixels_mut()) {
        let a = u32::from(src[3]);
        for c in 0..3 {
            // round(c·a/255 + 255·(255−a)/255) in integers.
            let v = u32::from(src[c]) * a + 255 * (255 - a);
            dst[c] = ((v + 127) / 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgba, RgbaImage};

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn alpha_is_composited_on_white() {
        let mut img = RgbaImage::new(2, 1);
        img.put_pixel(0, 0, Rgba([0, 0, 0, 0])); // fully transparent → white
        img.put_pixel(1, 0, Rgba([255, 0, 0, 128])); // half red on white
        let rgb = decode_rgb(&png_bytes(&DynamicImage::ImageRgba8(img)), 1 << 20).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        // 255·128 + 255·127 = 255·255 → 255 ; 0·128 + 255·127 = 32385 → 127
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 127, 127]);
    }

    #[test]
    fn grayscale_and_16_bit_become_rgb8() {
        let gray = image::GrayImage::from_raw(2, 1, vec![10, 200]).unwrap();
        let rgb = decode_rgb(&png_bytes(&DynamicImage::ImageLuma8(gray)), 1 << 20).unwrap();
        assert_eq!(rgb.as_raw(), &vec![10, 10, 10, 200, 200, 200]);
        let g16 =
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(1, 1, vec![65535u16]).unwrap();
        let rgb = decode_rgb(&png_bytes(&DynamicImage::ImageLuma16(g16)), 1 << 20).unwrap();
        assert_eq!(rgb.as_raw(), &vec![255, 255, 255]);
    }

    #[test]
    fn refuses_too_many_pixels_before_decoding() {
        // A valid PNG header that declares 50000×50000 followed by nothing: the limit
        // must trip on the header alone.
        let img = DynamicImage::ImageRgb8(RgbImage::new(4, 4));
        let mut bytes = png_bytes(&img);
        bytes[16..20].copy_from_slice(&50000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&50000u32.to_be_bytes());
        // Fix the IHDR CRC so the header parses.
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes.truncate(64);
        let err = decode_rgb(&bytes, 89_478_485).unwrap_err();
        assert_eq!(err.class, "too_many_pixels", "{err:?}");
    }

    #[test]
    fn html_is_not_an_image() {
        let err = decode_rgb(b"<!doctype html><html></html>", 1 << 20).unwrap_err();
        assert_eq!(err.class, "not_an_image");
        assert!(err.detail.contains("3c 21 64 6f"), "{}", err.detail);
    }

    #[test]
    fn truncated_jpeg_is_a_decode_error() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([x as u8 * 4, y as u8 * 4, 7])
        }));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(img.as_bytes(), 64, 64, image::ExtendedColorType::Rgb8)
            .unwrap();
        out.truncate(out.len() / 3);
        assert!(decode_rgb(&out, 1 << 20).is_err());
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

/// Decode a JPEG at a reduced size when that is free of quality loss for the target:
/// the DCT-domain scaling of libjpeg (1/2, 1/4, 1/8 IDCT) is used with the largest
/// factor that keeps the short side ≥ `min_short`, then the exact resize runs on the
/// smaller image. Other formats, small reductions and unusual JPEGs (CMYK, 16-bit) take
/// the full decode. Returns the image and the upright size of the original.
pub fn decode_rgb_reduced(
    bytes: &[u8],
    max_pixels: u64,
    min_short: u32,
) -> Result<(RgbImage, (u32, u32)), RowFailure> {
    let full = |bytes: &[u8]| {
        decode_rgb(bytes, max_pixels).map(|img| {
            let d = img.dimensions();
            (img, d)
        })
    };
    if !bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        return full(bytes);
    }
    let Ok(size) = imagesize::blob_size(bytes) else {
        return full(bytes);
    };
    let (w, h) = (size.width as u32, size.height as u32);
    let short = w.min(h);
    let Some(factor) = [8u32, 4, 2]
        .into_iter()
        .find(|f| short / f >= min_short.max(1))
    else {
        return full(bytes);
    };
    if u64::from(w) * u64::from(h) > max_pixels
        || w > u32::from(u16::MAX)
        || h > u32::from(u16::MAX)
    {
        return full(bytes); // the full path reports too_many_pixels
    }
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    if dec
        .scale(w.div_ceil(factor) as u16, h.div_ceil(factor) as u16)
        .is_err()
    {
        return full(bytes);
    }
    let Ok(pixels) = dec.decode() else {
        return full(bytes); // let the full decoder classify the damage
    };
    let Some(info) = dec.info() else {
        return full(bytes);
    };
    let (sw, sh) = (u32::from(info.width), u32::from(info.height));
    let img = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => RgbImage::from_raw(sw, sh, pixels),
        jpeg_decoder::PixelFormat::L8 => image::GrayImage::from_raw(sw, sh, pixels)
            .map(|g| DynamicImage::ImageLuma8(g).into_rgb8()),
        _ => None,
    };
    let Some(img) = img else {
        return full(bytes);
    };
    let orientation = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_decoder().ok())
        .and_then(|mut d| d.orientation().ok())
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut dynimg = DynamicImage::ImageRgb8(img);
    dynimg.apply_orientation(orientation);
    let upright = match orientation {
        image::metadata::Orientation::Rotate90
        | image::metadata::Orientation::Rotate270
        | image::metadata::Orientation::Rotate90FlipH
        | image::metadata::Orientation::Rotate270FlipH => (h, w),
        _ => (w, h),
    };
    Ok((dynimg.into_rgb8(), upright))
}

#[cfg(test)]
mod reduced_tests {
    use super::*;
    use image::ImageEncoder;

    #[test]
    fn large_jpegs_decode_reduced_and_close_to_the_full_decode() {
        let img = RgbImage::from_fn(1600, 1200, |x, y| {
            image::Rgb([(x / 7) as u8, (y / 5) as u8, ((x + y) / 13) as u8])
        });
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 92)
            .write_image(img.as_raw(), 1600, 1200, image::ExtendedColorType::Rgb8)
            .unwrap();
        // Target short side 256: 1200/4 = 300 ≥ 256, 1200/8 = 150 < 256 → quarter size.
        let (small, orig) = decode_rgb_reduced(&jpg, 1 << 30, 256).unwrap();
        assert_eq!(orig, (1600, 1200));
        assert_eq!(small.dimensions(), (400, 300));
        let full = decode_rgb(&jpg, 1 << 30).unwrap();
        let p = small.get_pixel(200, 150).0;
        let q = full.get_pixel(802, 602).0;
        assert!(
            p.iter()
                .zip(q.iter())
                .all(|(a, b)| (i32::from(*a) - i32::from(*b)).abs() <= 6),
            "{p:?} vs {q:?}"
        );
        // No reduction when it would undershoot the target.
        let (same, _) = decode_rgb_reduced(&jpg, 1 << 30, 700).unwrap();
        assert_eq!(same.dimensions(), (1600, 1200));
        // PNG: full decode.
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(img.as_raw(), 1600, 1200, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(
            decode_rgb_reduced(&png, 1 << 30, 100)
                .unwrap()
                .0
                .dimensions(),
            (1600, 1200)
        );
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn animated_gif_gives_its_first_frame_and_bmp_tiff_decode() {
        use image::codecs::gif::{GifEncoder, Repeat};
        use image::{Delay, Frame, Rgba, RgbaImage};
        let mut gif = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut gif);
            enc.set_repeat(Repeat::Infinite).unwrap();
            for c in [[255u8, 0, 0, 255], [0, 0, 255, 255]] {
                let frame = Frame::from_parts(
                    RgbaImage::from_pixel(8, 8, Rgba(c)),
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                );
                enc.encode_frame(frame).unwrap();
            }
        }
        let rgb = decode_rgb(&gif, 1 << 20).unwrap();
        assert_eq!(rgb.dimensions(), (8, 8));
        let p = rgb.get_pixel(4, 4).0;
        assert!(p[0] > 200 && p[2] < 50, "first frame (red), got {p:?}");
        for fmt in [image::ImageFormat::Bmp, image::ImageFormat::Tiff] {
            let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(5, 3, image::Rgb([1, 2, 3])));
            let mut out = Vec::new();
            img.write_to(&mut Cursor::new(&mut out), fmt).unwrap();
            assert_eq!(
                decode_rgb(&out, 1 << 20).unwrap().get_pixel(2, 1).0,
                [1, 2, 3],
                "{fmt:?}"
            );
        }
    }
}

#[cfg(test)]
mod cmyk_tests {
    #[test]
    fn cmyk_jpeg_becomes_rgb() {
        // A 64×48 Adobe CMYK JPEG of RGB (200, 30, 40) written by Pillow.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/cmyk-200-30-40.jpg"
        );
        let rgb = super::decode_rgb(&std::fs::read(path).unwrap(), 1 << 20).unwrap();
        let p = rgb.get_pixel(10, 10).0;
        assert!(
            (i32::from(p[0]) - 200).abs() <= 2
                && (i32::from(p[1]) - 30).abs() <= 2
                && (i32::from(p[2]) - 40).abs() <= 2,
            "{p:?}"
        );
    }
}
