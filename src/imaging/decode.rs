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
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| RowFailure::new("decode_error", e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(to_rgb_on_white(img))
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
