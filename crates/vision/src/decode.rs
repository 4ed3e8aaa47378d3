//! Image bytes to RGB8, as OpenCV's `imdecode(IMREAD_COLOR)` gives them to Ultralytics: the
//! format sniffed from the magic bytes (never trusted from a content type), the pixel count
//! checked from the header before any pixel is decoded (a decompression bomb is refused without
//! allocating it), EXIF orientation applied, grey expanded, alpha dropped. JPEG goes through
//! libjpeg-turbo's decoder (mozjpeg), the one OpenCV links, so the pixels are the same bytes;
//! PNG and WebP (lossless or not, both decoders follow the format's exact arithmetic) through
//! `image`.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// A decoded image, tightly packed RGB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JPEG, PNG or WebP image (first bytes {0})")]
    UnknownFormat(String),
    #[error("the image is {width}x{height} = {pixels} pixels, over the limit of {limit}")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("corrupt {format} image: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
}

/// JPEG, PNG or WebP from the first bytes.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some(ImageFormat::Jpeg),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(ImageFormat::Png),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        _ => "image",
    }
}

pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Rgb, DecodeError> {
    let format = sniff(bytes).ok_or_else(|| {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        DecodeError::UnknownFormat(if head.is_empty() {
            "none: empty input".into()
        } else {
            head.join(" ")
        })
    })?;
    let corrupt = |reason: String| DecodeError::Corrupt {
        format: format_name(format),
        reason,
    };
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, max_pixels);
    }
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(|e| corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, max_pixels, format_name(format))?;
    let orientation = decoder.orientation().map_err(|e| corrupt(e.to_string()))?;
    let image = DynamicImage::from_decoder(decoder).map_err(|e| corrupt(e.to_string()))?;
    Ok(oriented(image, orientation))
}

/// RGB8 of `image` turned upright as its EXIF orientation says.
fn oriented(mut image: DynamicImage, orientation: Orientation) -> Rgb {
    image.apply_orientation(orientation);
    let rgb = image.into_rgb8();
    Rgb {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    }
}

/// The header's size against the limit, before a pixel is decoded; returns the pixel count.
fn check_size(
    width: u32,
    height: u32,
    limit: u64,
    format: &'static str,
) -> Result<u64, DecodeError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limit {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            pixels,
            limit,
        });
    }
    if pixels == 0 {
        return Err(DecodeError::Corrupt {
            format,
            reason: "zero width or height".into(),
        });
    }
    Ok(pixels)
}

fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<Rgb, DecodeError> {
    let corrupt = |reason: String| DecodeError::Corrupt {
        format: "JPEG",
        reason,
    };
    // libjpeg reports fatal errors by unwinding (mozjpeg's documented contract): catch them.
    let (decoded, orientation) =
        std::panic::catch_unwind(|| -> Result<(Rgb, Orientation), DecodeError> {
            // libjpeg keeps APP1 (EXIF) while reading the header: the orientation comes from it,
            // without parsing the file a second time.
            let header = mozjpeg::Decompress::builder()
                .with_markers(&[mozjpeg::Marker::APP(1)])
                .from_mem(bytes)
                .map_err(|e| corrupt(e.to_string()))?;
            let orientation = header
                .markers()
                .find_map(|m| {
                    m.data
                        .strip_prefix(b"Exif\0\0")
                        .and_then(Orientation::from_exif_chunk)
                })
                .unwrap_or(Orientation::NoTransforms);
            let (width, height) = (header.width() as u32, header.height() as u32);
            let pixels = check_size(width, height, max_pixels, "JPEG")?;
            let mut started = header.rgb().map_err(|e| corrupt(e.to_string()))?;
            let data = started
                .read_scanlines::<u8>()
                .map_err(|e| corrupt(e.to_string()))?;
            started.finish().map_err(|e| corrupt(e.to_string()))?;
            if data.len() as u64 != pixels * 3 {
                return Err(corrupt("fewer scanlines than the header says".into()));
            }
            Ok((
                Rgb {
                    width,
                    height,
                    pixels: data,
                },
                orientation,
            ))
        })
        .unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "libjpeg failed".to_owned());
            Err(corrupt(reason))
        })?;
    if orientation == Orientation::NoTransforms {
        return Ok(decoded);
    }
    let buffer = image::RgbImage::from_raw(decoded.width, decoded.height, decoded.pixels)
        .ok_or_else(|| corrupt("pixel buffer does not match its size".into()))?;
    Ok(oriented(DynamicImage::ImageRgb8(buffer), orientation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: image::ExtendedColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(data, width, height, color)
            .ok();
        out
    }

    use image::ImageEncoder as _;

    /// PNG's chunk CRC, so the forged header passes the decoder's check.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(ImageFormat::Png));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some(ImageFormat::WebP));
        assert_eq!(sniff(b"GIF89a"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn grey_expands_and_alpha_drops() {
        let grey = png(2, 1, image::ExtendedColorType::L8, &[7, 200]);
        assert_eq!(
            decode(&grey, 100).map(|i| i.pixels),
            Ok(vec![7, 7, 7, 200, 200, 200])
        );
        let rgba = png(1, 1, image::ExtendedColorType::Rgba8, &[1, 2, 3, 0]);
        assert_eq!(decode(&rgba, 100).map(|i| i.pixels), Ok(vec![1, 2, 3]));
    }

    #[test]
    fn a_bomb_is_refused_from_its_header() {
        // The header says 100000x100000; the body is not there at all.
        let mut bomb = png(1, 1, image::ExtendedColorType::L8, &[0]);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        match decode(&bomb, 50_000_000) {
            Err(DecodeError::TooManyPixels { pixels, .. }) => assert_eq!(pixels, 10_000_000_000),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn jpeg_exif_orientation_is_applied() {
        // A 4x2 JPEG, then an APP1 segment right after SOI: EXIF, little-endian TIFF, one IFD
        // entry, Orientation (0x0112) = 6 (rotate 90° clockwise).
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .write_image(&[200; 4 * 2 * 3], 4, 2, image::ExtendedColorType::Rgb8)
            .ok();
        let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec();
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let length = (app1.len() + 2) as u16;
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend_from_slice(&[0xFF, 0xE1]);
        with_exif.extend_from_slice(&length.to_be_bytes());
        with_exif.extend_from_slice(&app1);
        with_exif.extend_from_slice(&jpeg[2..]);
        let upright = decode(&with_exif, 100).map(|i| (i.width, i.height));
        assert_eq!(upright, Ok((2, 4)));
        assert_eq!(decode(&jpeg, 100).map(|i| (i.width, i.height)), Ok((4, 2)));
    }

    #[test]
    fn corrupt_and_unknown_inputs_say_so() {
        let mut truncated = png(4, 4, image::ExtendedColorType::Rgb8, &[9; 48]);
        truncated.truncate(40);
        assert!(matches!(
            decode(&truncated, 100),
            Err(DecodeError::Corrupt { format: "PNG", .. })
        ));
        assert!(matches!(
            decode(b"hello", 100),
            Err(DecodeError::UnknownFormat(_))
        ));
        assert!(matches!(
            decode(&[0xFF, 0xD8, 0xFF, 0], 100),
            Err(DecodeError::Corrupt { format: "JPEG", .. })
        ));
    }
}
