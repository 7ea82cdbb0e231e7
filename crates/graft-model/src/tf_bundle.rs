//! TensorFlow's tensor bundles, read without TensorFlow: the format behind TF1 and TF2
//! checkpoints (`model.ckpt.index` + `model.ckpt.data-00000-of-00001`) and SavedModels'
//! `variables/`. The `.index` file is a LevelDB-style table (data blocks of prefix-compressed
//! keys, an index block, a 48-byte footer) whose values are `BundleEntryProto`s, decoded with
//! prost; each entry says where its tensor's bytes lie in which `.data` shard, with their masked
//! CRC32C. Every offset, length, type, shape and checksum is checked before a tensor is used, so
//! a truncated, corrupt or mislabelled file is an error naming the file and the tensor. Nothing
//! in the checkpoint is executed or interpreted beyond its tensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::ModelError;

/// `tensorflow/core/lib/io/format.h`'s table magic, the footer's last 8 bytes.
const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
const FOOTER_LEN: usize = 48;
/// A block's trailer: its compression byte and masked CRC32C.
const TRAILER_LEN: usize = 5;

/// `tensor_bundle.proto`'s header, stored under the empty key.
#[derive(Clone, PartialEq, Message)]
struct BundleHeaderProto {
    #[prost(int32, tag = "1")]
    num_shards: i32,
    /// 0: little-endian, 1: big-endian.
    #[prost(int32, tag = "2")]
    endianness: i32,
}

/// `tensor_bundle.proto`'s entry: where one tensor lies and what it is.
#[derive(Clone, PartialEq, Message)]
struct BundleEntryProto {
    #[prost(int32, tag = "1")]
    dtype: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    shard_id: i32,
    #[prost(int64, tag = "4")]
    offset: i64,
    #[prost(int64, tag = "5")]
    size: i64,
    #[prost(fixed32, tag = "6")]
    crc32c: u32,
    /// Partitioned variables: the slices stored under other keys.
    #[prost(bytes = "vec", repeated, tag = "7")]
    slices: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    dim: Vec<Dim>,
    #[prost(bool, tag = "3")]
    unknown_rank: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Dim {
    #[prost(int64, tag = "1")]
    size: i64,
}

/// A tensor's element type, as TensorFlow's `DataType` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TfType {
    F32,
    F64,
    F16,
    BF16,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    String,
}

impl TfType {
    fn from_proto(dtype: i32) -> Option<Self> {
        Some(match dtype {
            1 => Self::F32,
            2 => Self::F64,
            3 => Self::I32,
            4 => Self::U8,
            5 => Self::I16,
            6 => Self::I8,
            7 => Self::String,
            9 => Self::I64,
            10 => Self::Bool,
            14 => Self::BF16,
            17 => Self::U16,
            19 => Self::F16,
            22 => Self::U32,
            23 => Self::U64,
            _ => return None,
        })
    }

    /// Bytes per element (`None` for strings, whose elements vary).
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Self::I8 | Self::U8 | Self::Bool => 1,
            Self::F16 | Self::BF16 | Self::I16 | Self::U16 => 2,
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F64 | Self::I64 | Self::U64 => 8,
            Self::String => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
            Self::Bool => "bool",
            Self::String => "string",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64 | Self::F16 | Self::BF16)
    }
}

/// One tensor of a bundle, as its index describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleTensor {
    pub dtype: TfType,
    pub shape: Vec<usize>,
    shard: usize,
    offset: u64,
    size: u64,
    crc32c: u32,
}

/// A tensor bundle: its index read, its shards found.
#[derive(Debug)]
pub struct TensorBundle {
    /// The `.index` file.
    pub index: PathBuf,
    shards: Vec<PathBuf>,
    tensors: BTreeMap<String, BundleTensor>,
}

fn corrupt(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::CorruptWeights {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The error of opening `path`, the `what` a missing file is.
pub(crate) fn opening(path: &Path, what: &'static str) -> impl Fn(std::io::Error) -> ModelError {
    let path = path.to_path_buf();
    move |source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile {
            path: path.clone(),
            what,
        },
        _ => ModelError::Io {
            path: path.clone(),
            source,
        },
    }
}

/// TensorFlow's `crc32c::Unmask`.
fn unmask(masked: u32) -> u32 {
    let rotated = masked.wrapping_sub(0xa282_ead8);
    rotated.rotate_left(15)
}

/// A LEB128 varint at the start of `bytes`, and its length.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A table block's entries: each key with its value.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A block's offset and length in the table.
#[derive(Debug, Clone, Copy)]
struct BlockHandle {
    offset: u64,
    size: u64,
}

impl BlockHandle {
    fn decode(bytes: &[u8]) -> Option<(Self, usize)> {
        let (offset, a) = varint(bytes)?;
        let (size, b) = varint(&bytes[a..])?;
        Some((Self { offset, size }, a + b))
    }
}

/// The entries (key, value) of a table's block, its trailer's checksum verified.
fn block_entries(path: &Path, table: &[u8], handle: BlockHandle) -> Result<Entries, ModelError> {
    let start = usize::try_from(handle.offset).unwrap_or(usize::MAX);
    let len = usize::try_from(handle.size).unwrap_or(usize::MAX);
    let end = start
        .checked_add(len)
        .and_then(|e| e.checked_add(TRAILER_LEN))
        .filter(|&e| e <= table.len())
        .ok_or_else(|| {
            corrupt(
                path,
                format!(
                    "a block at byte {start} of {len} bytes runs past the end of the file ({} \
                     bytes): the index is truncated",
                    table.len()
                ),
            )
        })?;
    let contents = &table[start..start + len];
    let (kind, stored) = (
        table[start + len],
        u32::from_le_bytes(table[start + len + 1..end].try_into().expect("4 bytes")),
    );
    let crc = crc32c::crc32c_append(crc32c::crc32c(contents), &[kind]);
    if crc != unmask(stored) {
        return Err(corrupt(
            path,
            format!("the block at byte {start} fails its checksum: the index is corrupt"),
        ));
    }
    let decompressed;
    let block: &[u8] = match kind {
        0 => contents,
        1 => {
            decompressed = snap::raw::Decoder::new()
                .decompress_vec(contents)
                .map_err(|e| corrupt(path, format!("the block at byte {start}: snappy: {e}")))?;
            &decompressed
        }
        other => {
            return Err(corrupt(
                path,
                format!("the block at byte {start} has unknown compression {other}"),
            ));
        }
    };
    parse_block(block).ok_or_else(|| {
        corrupt(
            path,
            format!("the block at byte {start} does not parse: the index is corrupt"),
        )
    })
}

/// A block's entries: each `shared, unshared, value length` (varints), the key's new bytes and
/// the value; the block ends with its restart offsets (u32 each) and their count.
fn parse_block(block: &[u8]) -> Option<Entries> {
    let count_at = block.len().checked_sub(4)?;
    let restarts = u32::from_le_bytes(block[count_at..].try_into().ok()?) as usize;
    let end = count_at.checked_sub(restarts.checked_mul(4)?)?;
    let mut entries = Vec::new();
    let mut key: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < end {
        let (shared, a) = varint(&block[at..end])?;
        at += a;
        let (unshared, b) = varint(&block[at..end])?;
        at += b;
        let (value_len, c) = varint(&block[at..end])?;
        at += c;
        let (shared, unshared, value_len) =
            (shared as usize, unshared as usize, value_len as usize);
        if shared > key.len() {
            return None;
        }
        key.truncate(shared);
        key.extend_from_slice(block.get(at..at.checked_add(unshared)?)?);
        at += unshared;
        let value = block.get(at..at.checked_add(value_len)?)?.to_vec();
        at += value_len;
        entries.push((key.clone(), value));
    }
    Some(entries)
}

impl TensorBundle {
    /// Opens the bundle `path` names: its `.index` file, or the checkpoint prefix
    /// (`model.ckpt`) the index and data files share.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let index = if path.extension().is_some_and(|e| e == "index") {
            path.to_path_buf()
        } else {
            PathBuf::from(format!("{}.index", path.display()))
        };
        let table =
            std::fs::read(&index).map_err(opening(&index, "TensorFlow checkpoint index"))?;
        let footer = table
            .len()
            .checked_sub(FOOTER_LEN)
            .map(|at| &table[at..])
            .ok_or_else(|| {
                corrupt(
                    &index,
                    format!(
                        "{} bytes: too short for a checkpoint index (its footer alone is 48)",
                        table.len()
                    ),
                )
            })?;
        let magic = u64::from_le_bytes(footer[40..].try_into().expect("8 bytes"));
        if magic != TABLE_MAGIC {
            return Err(corrupt(
                &index,
                "not a TensorFlow checkpoint index (no table magic at its end): truncated, or \
                 another kind of file",
            ));
        }
        let bad_footer = || corrupt(&index, "the footer's block handles do not parse");
        let (_, used) = BlockHandle::decode(footer).ok_or_else(bad_footer)?;
        let (index_block, _) = BlockHandle::decode(&footer[used..]).ok_or_else(bad_footer)?;
        let mut entries = Vec::new();
        for (_, handle) in block_entries(&index, &table, index_block)? {
            let (handle, _) = BlockHandle::decode(&handle)
                .ok_or_else(|| corrupt(&index, "an index entry's block handle does not parse"))?;
            entries.extend(block_entries(&index, &table, handle)?);
        }
        let mut header = None;
        let mut tensors = BTreeMap::new();
        for (key, value) in entries {
            let name = String::from_utf8_lossy(&key).to_string();
            if key.is_empty() {
                header = Some(
                    BundleHeaderProto::decode(value.as_slice())
                        .map_err(|e| corrupt(&index, format!("the bundle header: {e}")))?,
                );
                continue;
            }
            let entry = BundleEntryProto::decode(value.as_slice())
                .map_err(|e| corrupt(&index, format!("tensor `{name}`: its entry: {e}")))?;
            if !entry.slices.is_empty() {
                return Err(ModelError::Unsupported {
                    path: index.clone(),
                    message: format!(
                        "tensor `{name}` is a partitioned variable (stored in slices), which \
                         graft does not read"
                    ),
                });
            }
            let dtype = TfType::from_proto(entry.dtype).ok_or_else(|| {
                corrupt(
                    &index,
                    format!("tensor `{name}`: unknown data type {}", entry.dtype),
                )
            })?;
            let shape_proto = entry.shape.unwrap_or_default();
            if shape_proto.unknown_rank || shape_proto.dim.iter().any(|d| d.size < 0) {
                return Err(corrupt(
                    &index,
                    format!("tensor `{name}`: its shape is not fully known"),
                ));
            }
            let shape: Vec<usize> = shape_proto.dim.iter().map(|d| d.size as usize).collect();
            let (Ok(shard), Ok(offset), Ok(size)) = (
                usize::try_from(entry.shard_id),
                u64::try_from(entry.offset),
                u64::try_from(entry.size),
            ) else {
                return Err(corrupt(
                    &index,
                    format!("tensor `{name}`: a negative shard, offset or size"),
                ));
            };
            if let Some(width) = dtype.size() {
                let elements = shape
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .and_then(|n| n.checked_mul(width));
                if elements.map(|n| n as u64) != Some(size) {
                    return Err(corrupt(
                        &index,
                        format!(
                            "tensor `{name}`: {} of shape {shape:?} takes {} bytes, but the \
                             index gives {size}",
                            dtype.name(),
                            elements.map_or("more than memory".into(), |n| n.to_string())
                        ),
                    ));
                }
            }
            tensors.insert(
                name,
                BundleTensor {
                    dtype,
                    shape,
                    shard,
                    offset,
                    size,
                    crc32c: entry.crc32c,
                },
            );
        }
        let header = header.ok_or_else(|| {
            corrupt(
                &index,
                "no bundle header (the empty key): not a tensor bundle's index",
            )
        })?;
        if header.endianness != 0 {
            return Err(ModelError::Unsupported {
                path: index.clone(),
                message: "a big-endian checkpoint, which graft does not read".into(),
            });
        }
        let count = usize::try_from(header.num_shards)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| corrupt(&index, format!("{} shards", header.num_shards)))?;
        let prefix = index.with_extension("");
        let shards: Vec<PathBuf> = (0..count)
            .map(|i| PathBuf::from(format!("{}.data-{i:05}-of-{count:05}", prefix.display())))
            .collect();
        if let Some((name, tensor)) = tensors.iter().find(|(_, t)| t.shard >= count) {
            return Err(corrupt(
                &index,
                format!(
                    "tensor `{name}` is in shard {}, but the bundle has {count}",
                    tensor.shard
                ),
            ));
        }
        Ok(Self {
            index,
            shards,
            tensors,
        })
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &BTreeMap<String, BundleTensor> {
        &self.tensors
    }

    /// The raw little-endian bytes of tensor `name`, checked against the index's length and
    /// checksum; a missing shard or a short one is an error naming it and the tensor.
    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, ModelError> {
        let (tensor, bytes) = self.stored(name)?;
        if tensor.dtype == TfType::String {
            self.decode_strings(name, tensor, &bytes)?; // its layout's own checksums
        } else if crc32c::crc32c(&bytes) != unmask(tensor.crc32c) {
            return Err(self.checksum_error(tensor, name));
        }
        Ok(bytes)
    }

    fn checksum_error(&self, tensor: &BundleTensor, name: &str) -> ModelError {
        corrupt(
            &self.shards[tensor.shard],
            format!("tensor `{name}` fails its checksum: the data are corrupt"),
        )
    }

    /// The elements of string tensor `name`. A bundle stores them as each element's length
    /// (varint64), the masked CRC32C of the lengths (each as a little-endian u32), then the
    /// bytes; the entry's checksum covers the lengths (as u32), that CRC and the bytes.
    pub fn strings(&self, name: &str) -> Result<Vec<Vec<u8>>, ModelError> {
        let (tensor, bytes) = self.stored(name)?;
        self.decode_strings(name, tensor, &bytes)
    }

    /// The elements of string tensor `name` from its stored `bytes`, checksums verified.
    fn decode_strings(
        &self,
        name: &str,
        tensor: &BundleTensor,
        bytes: &[u8],
    ) -> Result<Vec<Vec<u8>>, ModelError> {
        let shard = &self.shards[tensor.shard];
        let bad = |what: &str| corrupt(shard, format!("string tensor `{name}`: {what}"));
        if tensor.dtype != TfType::String {
            return Err(bad(&format!("is {}", tensor.dtype.name())));
        }
        let count: usize = tensor.shape.iter().product();
        let mut at = 0;
        let mut lengths = Vec::with_capacity(count.min(bytes.len()));
        for _ in 0..count {
            let (length, used) = varint(&bytes[at..]).ok_or_else(|| bad("lengths cut short"))?;
            lengths.push(length);
            at += used;
        }
        let mut covered: Vec<u8> = Vec::new();
        for &length in &lengths {
            match u32::try_from(length) {
                Ok(short) => covered.extend(short.to_le_bytes()),
                Err(_) => covered.extend(length.to_le_bytes()),
            }
        }
        let stored = bytes
            .get(at..at + 4)
            .ok_or_else(|| bad("no length checksum"))?;
        if crc32c::crc32c(&covered) != unmask(u32::from_le_bytes(stored.try_into().expect("4"))) {
            return Err(self.checksum_error(tensor, name));
        }
        covered.extend_from_slice(stored);
        at += 4;
        let mut strings = Vec::with_capacity(lengths.len());
        for length in lengths {
            let end = usize::try_from(length)
                .ok()
                .and_then(|l| at.checked_add(l))
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| bad("an element runs past the tensor"))?;
            strings.push(bytes[at..end].to_vec());
            covered.extend_from_slice(&bytes[at..end]);
            at = end;
        }
        if crc32c::crc32c(&covered) != unmask(tensor.crc32c) {
            return Err(self.checksum_error(tensor, name));
        }
        Ok(strings)
    }

    /// Tensor `name`'s entry and the bytes its entry points at, not yet checked against its
    /// checksum.
    fn stored(&self, name: &str) -> Result<(&BundleTensor, Vec<u8>), ModelError> {
        let tensor = self.tensors.get(name).ok_or_else(|| {
            corrupt(
                &self.index,
                format!("no tensor `{name}` (run `graft inspect` on the checkpoint)"),
            )
        })?;
        let shard = &self.shards[tensor.shard];
        let mut file =
            std::fs::File::open(shard).map_err(opening(shard, "checkpoint data shard"))?;
        let io = |source| ModelError::Io {
            path: shard.clone(),
            source,
        };
        let length = file.metadata().map_err(io)?.len();
        if tensor
            .offset
            .checked_add(tensor.size)
            .is_none_or(|end| end > length)
        {
            return Err(corrupt(
                shard,
                format!(
                    "tensor `{name}` lies at bytes {}..{} but the shard has {length}: it is \
                     truncated",
                    tensor.offset,
                    tensor.offset.saturating_add(tensor.size)
                ),
            ));
        }
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(tensor.offset)).map_err(io)?;
        let mut bytes = vec![0u8; tensor.size as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        Ok((tensor, bytes))
    }

    /// Tensor `name` as f32 values (from any float type), row-major, with its shape.
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let tensor = &self.tensors.get(name).ok_or_else(|| {
            corrupt(
                &self.index,
                format!("no tensor `{name}` (run `graft inspect` on the checkpoint)"),
            )
        })?;
        let bytes = self.bytes(name)?;
        let values = match tensor.dtype {
            TfType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            TfType::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            TfType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            TfType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            other => {
                return Err(corrupt(
                    &self.index,
                    format!(
                        "tensor `{name}` is {}, where a float tensor is expected",
                        other.name()
                    ),
                ));
            }
        };
        Ok((tensor.shape.clone(), values))
    }
}

/// An IEEE half as f32.
fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalize.
            let shift = m.leading_zeros() - 21;
            sign | ((127 - 15 - shift + 1) << 23) | (((m << shift) & 0x3ff) << 13)
        }
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_halves_follow_tensorflow() {
        // crc32c::Mask(x) = rotr(x, 15) + 0xa282ead8
        let crc = 0x1234_5678u32;
        let masked = crc.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(unmask(masked), crc);
        for (h, f) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
        ] {
            assert_eq!(half_to_f32(h), f, "{h:#x}");
        }
        assert_eq!(varint(&[0xac, 0x02]), Some((300, 2)));
    }
}
