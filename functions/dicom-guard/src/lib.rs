//! A check that runs before dicom-rs reads a DICOM file held in memory.
//!
//! dicom-parser 0.10 allocates a value's declared length before it reads the
//! value (`try_reserve_exact(len)` then `resize(len, 0)`), so a 200-byte file
//! whose header declares a 4 GB element makes the reader commit 4 GB
//! (`fuzz/artifacts/describe_image/`). Every upload is in memory and at most
//! `MAX_IMAGE_BYTES`, so any length larger than the bytes left is a lie:
//! this walk refuses it first. It reads headers with dicom-rs's own decoders
//! (the meta group's explicit VR little endian, then the data set's transfer
//! syntax through dicom-parser's lazy reader, which skips values instead of
//! reading them), so it sees the lengths exactly as the real read will.
//! Written here because dicom-rs has no allocation limit option; the fix
//! belongs upstream too (dicom-parser could compare against the source's
//! remaining length when it knows it).

use std::io::Cursor;

use dicom_core::header::{HasLength, Header, Length};
use dicom_core::{Tag, VR};
use dicom_encoding::Codec;
use dicom_encoding::TransferSyntaxIndex;
use dicom_encoding::decode::Decode;
use dicom_encoding::decode::explicit_le::ExplicitVRLittleEndianDecoder;
use dicom_parser::StatefulDecode;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Why a file was refused before parsing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LengthError {
    #[error("element {tag} declares {declared} bytes but only {left} are left in the file")]
    LongerThanFile { tag: String, declared: u64, left: u64 },
    #[error("the file's data set is deflated, which is not accepted")]
    Deflated,
    #[error("the data set cannot be walked element by element ({0}); it is not read further")]
    Unwalkable(String),
}

const TRANSFER_SYNTAX: Tag = Tag(0x0002, 0x0010);
const PREAMBLE: usize = 128;

/// Checks every declared length in `bytes` (a whole DICOM file, with or
/// without its preamble) against what is left of the file. Anything else
/// wrong with the file is left for dicom-rs to report: this only makes sure
/// its answer costs no more memory than the file itself.
pub fn check_lengths(bytes: &[u8]) -> Result<(), LengthError> {
    // The same preamble detection as dicom-object's `ReadPreamble::Auto`.
    let start = if bytes.len() >= PREAMBLE + 4 && &bytes[PREAMBLE..PREAMBLE + 4] == b"DICM" {
        PREAMBLE + 4
    } else if bytes.starts_with(b"DICM") {
        4
    } else {
        return Ok(());
    };
    let Some((data_set_start, transfer_syntax)) = walk_meta_group(bytes, start)? else { return Ok(()) };
    let Some(syntax) = TransferSyntaxRegistry.get(transfer_syntax.trim_end_matches(['\0', ' '])) else { return Ok(()) };
    if matches!(syntax.codec(), Codec::Dataset(_)) {
        return Err(LengthError::Deflated);
    }
    walk_data_set(&bytes[data_set_start..], syntax)
}

/// The file meta group as dicom-object's `FileMetaTable` reads it: the group
/// length, then elements until that many bytes are read. Returns where the
/// data set begins and the transfer syntax, or `None` where the meta group
/// is malformed in a way dicom-object refuses without allocating.
fn walk_meta_group(bytes: &[u8], start: usize) -> Result<Option<(usize, String)>, LengthError> {
    let decoder = ExplicitVRLittleEndianDecoder::default();
    let mut source = Cursor::new(bytes);
    source.set_position(start as u64);
    let left = |source: &Cursor<&[u8]>| bytes.len() as u64 - source.position().min(bytes.len() as u64);
    let Ok((group_length_header, _)) = decoder.decode_header(&mut source) else { return Ok(None) };
    if group_length_header.length() != Length(4) || left(&source) < 4 {
        return Ok(None);
    }
    let at = source.position() as usize;
    let group_length = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    source.set_position(at as u64 + 4);
    let mut read: u32 = 0;
    let mut transfer_syntax = String::new();
    while read < group_length {
        let Ok((header, header_bytes)) = decoder.decode_header(&mut source) else { return Ok(None) };
        let Some(len) = header.length().get() else { return Ok(None) };
        if u64::from(len) > left(&source) {
            return Err(longer_than_file(header.tag(), u64::from(len), left(&source)));
        }
        let at = source.position() as usize;
        if header.tag() == TRANSFER_SYNTAX {
            transfer_syntax = String::from_utf8_lossy(&bytes[at..at + len as usize]).into_owned();
        }
        source.set_position(at as u64 + u64::from(len));
        read = read.saturating_add(header_bytes as u32).saturating_add(len);
    }
    Ok(Some((source.position() as usize, transfer_syntax)))
}

/// The data set, token by token, values skipped after their length is
/// checked. A data set the lazy reader cannot walk to its end is refused:
/// dicom-parser's eager reader does not always fail where the lazy one does
/// (it read on past a stray item delimiter in
/// `fuzz/artifacts/describe_image/oom-2b0e697f…` and then allocated a 4 GB
/// declared length this walk never reached), so only a file walked whole
/// is known to hold no lying length.
fn walk_data_set(data_set: &[u8], syntax: &dicom_encoding::TransferSyntax) -> Result<(), LengthError> {
    let total = data_set.len() as u64;
    let mut reader = LazyDataSetReader::new_with_ts(Cursor::new(data_set), syntax).map_err(|e| LengthError::Unwalkable(e.to_string()))?;
    // The open sequences and items, as the tokens say: dicom-parser 0.10's
    // lazy reader `expect`s to be inside a sequence when it meets an item
    // header after an item ended, and panics otherwise
    // (`fuzz/artifacts/describe_image/crash-3f1721ec…`), so the walk stops
    // at the first token that does not nest.
    let mut open: Vec<Nesting> = Vec::new();
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| LengthError::Unwalkable(e.to_string()))?;
        let nests = match &token {
            LazyDataToken::SequenceStart { .. } | LazyDataToken::PixelSequenceStart => {
                open.push(Nesting::Sequence);
                true
            }
            LazyDataToken::ItemStart { .. } => {
                let inside_a_sequence = open.last() == Some(&Nesting::Sequence);
                open.push(Nesting::Item);
                inside_a_sequence
            }
            // After an item the reader expects its sequence around it.
            LazyDataToken::ItemEnd => open.pop() == Some(Nesting::Item) && open.last() == Some(&Nesting::Sequence),
            LazyDataToken::SequenceEnd => open.pop() == Some(Nesting::Sequence),
            _ => true,
        };
        if !nests {
            return Err(LengthError::Unwalkable(format!("{token:?} does not nest in the sequences and items around it")));
        }
        let (tag, declared, position) = match &token {
            LazyDataToken::LazyValue { header, decoder } => (header.tag(), header.length().get(), decoder.position()),
            LazyDataToken::LazyItemValue { len, decoder } => (Tag(0xFFFE, 0xE000), Some(*len), decoder.position()),
            LazyDataToken::ItemStart { len } => (Tag(0xFFFE, 0xE000), len.get(), 0),
            LazyDataToken::SequenceStart { tag, len } => (*tag, len.get(), 0),
            _ => (Tag(0, 0), None, 0),
        };
        // dicom-parser reads a binary value as `len / size` numbers but
        // counts `len` bytes read: a length that is no multiple of the size
        // leaves its reader out of step with the file (and with this walk),
        // reading lengths from the middle of values
        // (`fuzz/artifacts/describe_image/oom-fe2f278f…`: a UL of 49 bytes).
        if let LazyDataToken::LazyValue { header, .. } = &token
            && let (Some(size), Some(len)) = (value_size(header.vr()), header.length().get())
            && len % size != 0
        {
            return Err(LengthError::Unwalkable(format!("{} ({:?}) is {len} bytes long, not a multiple of {size}", header.tag(), header.vr())));
        }
        // Item and sequence starts carry no decoder: their length is checked
        // against the whole data set (their values are checked one by one).
        if let Some(declared) = declared.map(u64::from) {
            let left = total.saturating_sub(position);
            if declared > left {
                return Err(longer_than_file(tag, declared, left));
            }
        }
        token.skip().map_err(|e| LengthError::Unwalkable(e.to_string()))?;
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Nesting {
    Sequence,
    Item,
}

/// The size of one number of a binary VR, as dicom-parser's
/// `read_value_*` divide lengths by it; `None` for VRs read as bytes or text.
fn value_size(vr: VR) -> Option<u32> {
    match vr {
        VR::US | VR::OW | VR::SS => Some(2),
        VR::UL | VR::OL | VR::SL | VR::FL | VR::OF | VR::AT => Some(4),
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => Some(8),
        _ => None,
    }
}

fn longer_than_file(tag: Tag, declared: u64, left: u64) -> LengthError {
    LengthError::LongerThanFile { tag: tag.to_string(), declared, left }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR, value::DataSetSequence};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::InMemDicomObject;
    use dicom_object::meta::FileMetaTableBuilder;

    /// A small file: a few attributes, a sequence, 16x16 8-bit pixels.
    fn file(transfer_syntax: &str) -> Vec<u8> {
        let item = InMemDicomObject::from_element_iter([DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("T-D3000"))]);
        let object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
            DataElement::new(tags::ANATOMIC_REGION_SEQUENCE, VR::SQ, DataSetSequence::from(vec![item])),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(vec![7; 256].into())),
        ]);
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1.1")
            .media_storage_sop_instance_uid("1.2.3.4")
            .transfer_syntax(transfer_syntax);
        let mut out = Vec::new();
        object.with_meta(meta).expect("meta").write_all(&mut out).expect("write");
        out
    }

    /// `file` with the 4-byte length of its pixel data set to `len`.
    fn with_pixel_data_length(mut file: Vec<u8>, len: u32) -> Vec<u8> {
        let tag = file.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).expect("pixel data tag");
        // Explicit VR: tag, VR, 2 reserved bytes, then the length; implicit: tag, length.
        let at = if &file[tag + 4..tag + 6] == b"OB" { tag + 8 } else { tag + 4 };
        file[at..at + 4].copy_from_slice(&len.to_le_bytes());
        file
    }

    #[test]
    fn well_formed_files_pass() {
        for syntax in [uids::EXPLICIT_VR_LITTLE_ENDIAN, uids::IMPLICIT_VR_LITTLE_ENDIAN] {
            let whole = file(syntax);
            assert_eq!(check_lengths(&whole), Ok(()), "{syntax}");
            assert_eq!(check_lengths(&whole[PREAMBLE..]), Ok(()), "{syntax} without its preamble");
        }
    }

    #[test]
    fn a_length_longer_than_the_file_is_refused() {
        for syntax in [uids::EXPLICIT_VR_LITTLE_ENDIAN, uids::IMPLICIT_VR_LITTLE_ENDIAN] {
            let lying = with_pixel_data_length(file(syntax), 0xFFFF_FFF0);
            assert!(
                matches!(check_lengths(&lying), Err(LengthError::LongerThanFile { declared: 0xFFFF_FFF0, left: 256, .. })),
                "{syntax}: {:?}",
                check_lengths(&lying)
            );
            // One byte too many is already a lie.
            assert!(check_lengths(&with_pixel_data_length(file(syntax), 257)).is_err(), "{syntax}");
        }
    }

    #[test]
    fn not_dicom_is_left_to_the_reader() {
        assert_eq!(check_lengths(b"\x89PNG\r\n\x1a\n"), Ok(()));
        assert_eq!(check_lengths(b""), Ok(()));
        assert_eq!(check_lengths(b"DICM"), Ok(()));
    }

    #[test]
    fn the_fuzzers_findings_are_refused() {
        let finding = include_bytes!("../../../fuzz/artifacts/describe_image/oom-123d00fb5b3da75a8ac902585b2785577e9ce6fc");
        assert!(matches!(check_lengths(finding), Err(LengthError::LongerThanFile { .. })), "{:?}", check_lengths(finding));
        // A stray item delimiter the lazy walk stops at, and the eager read
        // goes past to a 4 GB length.
        let finding = include_bytes!("../../../fuzz/artifacts/describe_image/oom-2b0e697f232835b426481eebb8ed79338c7b9dff");
        assert!(check_lengths(finding).is_err(), "{:?}", check_lengths(finding));
        // A UL of 49 bytes: the eager read steps 48 and reads on out of step.
        let finding = include_bytes!("../../../fuzz/artifacts/describe_image/oom-fe2f278fa3af5f21a2c1cc459a676f20dba2ebad");
        assert!(matches!(check_lengths(finding), Err(LengthError::Unwalkable(_))), "{:?}", check_lengths(finding));
        // An item header where the lazy reader has no sequence open (it panics).
        let finding = include_bytes!("../../../fuzz/artifacts/describe_image/crash-3f1721ec11ed32d09dcd728206f4e9abf9fc4e71");
        assert!(matches!(check_lengths(finding), Err(LengthError::Unwalkable(_))), "{:?}", check_lengths(finding));
    }

    #[test]
    fn a_data_set_that_stops_being_walkable_is_refused() {
        let mut whole = file(uids::EXPLICIT_VR_LITTLE_ENDIAN);
        // A stray item delimiter, then an element declaring 4 GB.
        whole.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        whole.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF]);
        assert!(check_lengths(&whole).is_err(), "{:?}", check_lengths(&whole));
    }
}
