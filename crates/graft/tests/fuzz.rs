//! Seeded mutation fuzzing of graft's loaders, on stable Rust.
//!
//! Every loader that reads a file from a stranger (safetensors weights, whole model folders,
//! PyTorch checkpoints, TensorFlow checkpoints, Keras files, `tokenizer.json`, CSV/JSONL/plain
//! text, parquet, PNG/JPEG, TOML run configs, label files) is fed small real files from the repository, mutated by a seeded
//! mutator (bit flips, byte sets, truncation, splicing, inserted bytes, lying length prefixes,
//! huge integers, and JSON/TOML-aware edits: deep nesting, huge numbers, wrong types, invalid
//! UTF-8), plus hand-made nasty files per format. Each case must end in an error that names the
//! file, or in a result that passes the target's checks: a panic, a case over the time limit or an
//! allocation over the bound fails the test and names the seed, case and mutations so it can be
//! replayed. `docs/fuzzing.md` describes the harness and each loader's limits.
//!
//! Environment: `GRAFT_FUZZ_CASES` (mutated cases in all, default 5000), `GRAFT_FUZZ_SEED`
//! (default fixed), `GRAFT_FUZZ_CASE` (replay only that case), `GRAFT_FUZZ_TARGET` (only targets
//! whose name contains it), `GRAFT_FUZZ_TIMEOUT_MS` (per case, default 5000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::Device;

// ---------------------------------------------------------------------------------------------
// Allocation bound

/// No single allocation may exceed this.
const MAX_ALLOCATION: usize = 1 << 30;
/// Nor may all live allocations together.
const MAX_LIVE: usize = 3 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The largest refused request since the last check (0: none).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// The case being run, printed when an allocation is refused (the process may abort next).
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// The system allocator, refusing (and recording) any allocation over the bound, so an absurd
/// request fails the case by name instead of swapping the machine.
struct Bounded;

impl Bounded {
    fn admit(size: usize) -> bool {
        if size <= MAX_ALLOCATION && LIVE.load(Ordering::Relaxed).saturating_add(size) <= MAX_LIVE {
            return true;
        }
        REFUSED.fetch_max(size, Ordering::Relaxed);
        report_refusal(size);
        false
    }

    fn added(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

/// Writes "refused allocation of N bytes in <case>" without allocating.
fn report_refusal(size: usize) {
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"fuzz: refused an allocation of ");
    let _ = err.write_all(&digits[at..]);
    let _ = err.write_all(b" bytes (over the bound) in ");
    if let Ok(current) = CURRENT.try_lock() {
        let _ = err.write_all(current.as_bytes());
    }
    let _ = err.write_all(b"\n");
}

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::added(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::admit(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::added(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grow = new_size.saturating_sub(layout.size());
        if !Self::admit(new_size.max(grow)) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::added(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

// ---------------------------------------------------------------------------------------------
// Randomness

/// SplitMix64: small, seedable and the same on every platform and toolchain.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Integers that break size and offset arithmetic.
const INTERESTING: [u64; 14] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
    u64::MAX - 7,
    100_000_001,
];

/// Text fragments for JSON/TOML values: huge or odd numbers, wrong types.
const ODD_VALUES: [&str; 16] = [
    "18446744073709551616",
    "-1",
    "1e400",
    "-1e400",
    "4611686018427387904",
    "9999999999",
    "0",
    "1e-400",
    "NaN",
    "null",
    "true",
    "\"\"",
    "{}",
    "[]",
    "[4611686018427387904, 4611686018427387904]",
    "\"\u{0}\"",
];

/// Applies one random mutation to `data` and says what it did.
fn mutate(data: &mut Vec<u8>, rng: &mut Rng, text: bool) -> String {
    let len = data.len();
    let kinds = if text { 15 } else { 10 };
    match rng.below(kinds) {
        0 if len > 0 => {
            let at = rng.below(len);
            let bit = rng.below(8);
            data[at] ^= 1 << bit;
            format!("flip bit {bit} at {at}")
        }
        1 if len > 0 => {
            let at = rng.below(len);
            let random = rng.next() as u8;
            let value = *rng.pick(&[0x00, 0xff, 0x7f, 0x80, random]);
            data[at] = value;
            format!("set byte {at} to {value:#04x}")
        }
        2 if len > 0 => {
            let at = rng.below(len);
            data.truncate(at);
            format!("truncate to {at}")
        }
        3 if len > 1 => {
            let from = rng.below(len);
            let n = rng.below((len - from).min(4096)) + 1;
            let chunk = data[from..from + n].to_vec();
            let to = rng.below(len);
            let times = *rng.pick(&[1, 1, 2, 16]);
            for _ in 0..times {
                data.splice(to..to, chunk.iter().copied());
            }
            format!("copy {n} bytes from {from} to {to} x{times}")
        }
        4 => {
            let at = rng.below(len + 1);
            let n = rng.below(64) + 1;
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
            format!("insert {n} random bytes at {at}")
        }
        5 if len > 1 => {
            let from = rng.below(len);
            let n = rng.below((len - from).min(4096)) + 1;
            data.drain(from..from + n);
            format!("delete {n} bytes at {from}")
        }
        6 => {
            // A length prefix that lies (the safetensors header length, a zip or pickle size).
            let value = *rng.pick(&INTERESTING);
            let value = if rng.chance(3) {
                value.wrapping_add(rng.below(64) as u64)
            } else {
                value
            };
            if data.len() < 8 {
                data.resize(8, 0);
            }
            data[..8].copy_from_slice(&value.to_le_bytes());
            format!("set the leading u64 to {value}")
        }
        7 if len > 0 => {
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let at = rng.below(len);
            let value = rng.pick(&INTERESTING).to_le_bytes();
            let end = (at + width).min(len);
            data[at..end].copy_from_slice(&value[..end - at]);
            format!(
                "write a {width}-byte {:#x} at {at}",
                u64::from_le_bytes(value)
            )
        }
        8 if len > 0 => {
            let at = rng.below(len);
            let n = rng.below(16) + 1;
            let end = (at + n).min(len);
            for b in &mut data[at..end] {
                *b = b.wrapping_add(rng.below(5) as u8).wrapping_sub(2);
            }
            format!("nudge bytes {at}..{end}")
        }
        9 if len > 0 => {
            let from = rng.below(len);
            let to = rng.below(len);
            data.swap(from, to);
            format!("swap bytes {from} and {to}")
        }
        // Text-aware mutations.
        10 => {
            let depth = *rng.pick(&[200, 5_000, 100_000]);
            let open = *rng.pick(b"[{");
            let nest: Vec<u8> = if open == b'[' {
                std::iter::repeat_n(b'[', depth).collect()
            } else {
                b"{\"a\":".repeat(depth)
            };
            let at = value_position(data, rng);
            data.splice(at..at, nest);
            format!("nest {depth} levels of {} at {at}", open as char)
        }
        11 => {
            let value = *rng.pick(&ODD_VALUES);
            match number_span(data, rng) {
                Some((from, to)) => {
                    data.splice(from..to, value.bytes());
                    format!("replace the value at {from}..{to} with {value}")
                }
                None => {
                    let at = value_position(data, rng);
                    data.splice(at..at, value.bytes());
                    format!("insert {value} at {at}")
                }
            }
        }
        12 => {
            let at = value_position(data, rng);
            let options: [&[u8]; 4] = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28"];
            let bad = *rng.pick(&options);
            data.splice(at..at, bad.iter().copied());
            format!("insert invalid UTF-8 {bad:02x?} at {at}")
        }
        13 => {
            let n = *rng.pick(&[1_000, 100_000, 1_000_000]);
            let at = value_position(data, rng);
            let byte = *rng.pick(b"a9\"\\\n, ");
            data.splice(at..at, std::iter::repeat_n(byte, n));
            format!("insert {n} x {:?} at {at}", byte as char)
        }
        14 => {
            // A whole line (or the text between two delimiters) duplicated or dropped.
            let lines: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n' || **b == b',')
                .map(|(i, _)| i)
                .collect();
            if lines.len() < 2 {
                return mutate(data, rng, false);
            }
            let i = rng.below(lines.len() - 1);
            let (from, to) = (lines[i], lines[i + 1]);
            if rng.chance(2) {
                data.drain(from..to);
                format!("drop {from}..{to}")
            } else {
                let chunk = data[from..to].to_vec();
                data.splice(from..from, chunk);
                format!("duplicate {from}..{to}")
            }
        }
        _ if len == 0 => {
            data.extend((0..rng.below(32)).map(|_| rng.next() as u8));
            "fill an empty input".into()
        }
        _ => mutate(data, rng, text),
    }
}

/// A position just after a `:`, `=`, `[` or `,` (where a value starts), else anywhere.
fn value_position(data: &[u8], rng: &mut Rng) -> usize {
    if data.is_empty() {
        return 0;
    }
    for _ in 0..32 {
        let at = rng.below(data.len());
        if matches!(data[at], b':' | b'=' | b'[' | b',') {
            return at + 1;
        }
    }
    rng.below(data.len() + 1)
}

/// The span of a number or string literal near a random position.
fn number_span(data: &[u8], rng: &mut Rng) -> Option<(usize, usize)> {
    for _ in 0..32 {
        let at = rng.below(data.len().max(1));
        if at >= data.len() {
            return None;
        }
        if data[at].is_ascii_digit() {
            let from = (0..=at)
                .rev()
                .take_while(|&i| data[i].is_ascii_digit() || data[i] == b'.' || data[i] == b'-')
                .last()?;
            let to = (at..data.len())
                .take_while(|&i| data[i].is_ascii_digit() || data[i] == b'.' || data[i] == b'e')
                .last()?
                + 1;
            return Some((from, to));
        }
        if data[at] == b'"' {
            let end = data[at + 1..].iter().position(|&b| b == b'"')?;
            return Some((at, at + end + 2));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Seeds

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden(path: &str) -> PathBuf {
    repo().join("crates/graft-model/tests/golden").join(path)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One input: its bytes, where it came from, and whether the unmutated input must load.
#[derive(Clone)]
struct Seed {
    name: String,
    bytes: Vec<u8>,
    loads: bool,
    /// The model folder a `folder` seed's file belongs in, and the file's name there.
    folder: Option<(PathBuf, &'static str)>,
    /// Whether mutated cases start from it (large, slow inputs run once, as they are).
    mutable: bool,
}

fn seed(name: impl Into<String>, bytes: Vec<u8>, loads: bool) -> Seed {
    Seed {
        name: name.into(),
        bytes,
        loads,
        folder: None,
        mutable: true,
    }
}

/// A PNG chunk with its CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// A PNG that declares `width` x `height` RGB pixels with a tiny (wrong) image stream.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut idat = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    idat.write_all(&[0u8; 1024]).unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &idat.finish().unwrap()));
    png.extend(png_chunk(b"IEND", b""));
    png
}

/// A real 8-bit grayscale PNG of `width` x `height` black pixels (it compresses ~1000:1).
fn png_of_zeros(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut idat = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; width as usize + 1];
    for _ in 0..height {
        idat.write_all(&row).unwrap();
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &idat.finish().unwrap()));
    png.extend(png_chunk(b"IEND", b""));
    png
}

/// A small JPEG made from a golden PNG.
fn jpeg_seed() -> Vec<u8> {
    let image = image::open(golden("vision/chelsea_32.png"))
        .unwrap()
        .to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&image)
        .unwrap();
    out
}

/// `jpeg` with its start-of-frame dimensions set to `width` x `height`.
fn jpeg_declaring(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a baseline JPEG");
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}

/// A safetensors file with `header` as its JSON and `data` after it.
fn safetensors_with(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A small valid safetensors file.
fn small_safetensors() -> Vec<u8> {
    let values: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let ids: Vec<u8> = (0..4i64).flat_map(|i| i.to_le_bytes()).collect();
    let weight =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &values).unwrap();
    let ids = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![4], &ids).unwrap();
    safetensors::serialize([("w", weight), ("ids", ids)], None).unwrap()
}

// Pickle opcodes for the hand-written checkpoints.
const PROTO2: &[u8] = b"\x80\x02";
const STOP: u8 = b'.';

fn pickle_str(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

fn pickle_int(n: u8) -> Vec<u8> {
    vec![b'K', n]
}

/// A legacy (pre-1.6) `torch.save` file of `{"fc.weight": float [2, 3], "fc.bias": float [2]}`,
/// with `main` replacing the state-dict pickle when given.
fn legacy_pth(main: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    // The magic number, the protocol version, the system info.
    out.extend_from_slice(PROTO2);
    out.extend_from_slice(b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19");
    out.push(STOP);
    out.extend_from_slice(PROTO2);
    out.extend_from_slice(b"M\xe9\x03");
    out.push(STOP);
    out.extend_from_slice(PROTO2);
    out.extend_from_slice(b"}(");
    out.extend(pickle_str("protocol_version"));
    out.extend_from_slice(b"M\xe9\x03");
    out.extend(pickle_str("little_endian"));
    out.push(0x88);
    out.extend(pickle_str("type_sizes"));
    out.extend_from_slice(b"}(");
    for (name, size) in [("short", 2), ("int", 4), ("long", 4)] {
        out.extend(pickle_str(name));
        out.extend(pickle_int(size));
    }
    out.extend_from_slice(b"uu");
    out.push(STOP);
    // The state dict: each tensor is _rebuild_tensor_v2(storage, offset, size, stride, ...).
    let tensor = |key: &str, numel: u8, size: &[u8], stride: &[u8]| {
        let mut t = b"ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
        t.push(b'(');
        t.extend(pickle_str("storage"));
        t.extend_from_slice(b"ctorch\nFloatStorage\n");
        t.extend(pickle_str(key));
        t.extend(pickle_str("cpu"));
        t.extend(pickle_int(numel));
        t.push(b'N');
        t.extend_from_slice(b"tQ");
        t.extend(pickle_int(0));
        t.push(b'(');
        for &s in size {
            t.extend(pickle_int(s));
        }
        t.push(b't');
        t.push(b'(');
        for &s in stride {
            t.extend(pickle_int(s));
        }
        t.push(b't');
        t.push(0x89);
        t.extend_from_slice(b"ccollections\nOrderedDict\n)R");
        t.extend_from_slice(b"tR");
        t
    };
    let main = main.unwrap_or_else(|| {
        let mut m = PROTO2.to_vec();
        m.extend_from_slice(b"}(");
        m.extend(pickle_str("fc.weight"));
        m.extend(tensor("0", 6, &[2, 3], &[3, 1]));
        m.extend(pickle_str("fc.bias"));
        m.extend(tensor("1", 2, &[2], &[1]));
        m.push(b'u');
        m.push(STOP);
        m
    });
    out.extend(main);
    // The storage keys, then each storage: an element count and the data.
    out.extend_from_slice(PROTO2);
    out.push(b']');
    out.push(b'(');
    out.extend(pickle_str("0"));
    out.extend(pickle_str("1"));
    out.push(b'e');
    out.push(STOP);
    for numel in [6u64, 2] {
        out.extend_from_slice(&numel.to_le_bytes());
        for i in 0..numel {
            out.extend_from_slice(&(i as f32).to_le_bytes());
        }
    }
    out
}

/// Hand-written pickles that loop, nest or ask for huge allocations, as a legacy checkpoint's
/// state dict.
fn nasty_pickles() -> Vec<(String, Vec<u8>)> {
    let mut cases = Vec::new();
    let framed = |body: Vec<u8>| {
        let mut m = PROTO2.to_vec();
        m.extend(body);
        m.push(STOP);
        m
    };
    // LONG_BINGET of a memo key that was never put.
    cases.push((
        "long_binget of a missing memo key".into(),
        framed(b"j\xff\xff\xff\x7f".to_vec()),
    ));
    // BINUNICODE declaring 4 GiB - 1 of text.
    cases.push((
        "binunicode of 4 GiB".into(),
        framed(b"X\xff\xff\xff\xffabc".to_vec()),
    ));
    // BINBYTES8 / BINUNICODE8 declaring 2^62 bytes.
    let mut huge = vec![0x8e];
    huge.extend_from_slice(&(1u64 << 62).to_le_bytes());
    cases.push(("binbytes8 of 2^62 bytes".into(), framed(huge)));
    let mut huge = vec![0x8d];
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("binunicode8 of 2^64-1 bytes".into(), framed(huge)));
    // A memo bomb: a list memoized and appended twice to itself, 64 times over.
    let mut bomb = b"]q\x00".to_vec();
    for i in 1..64u8 {
        bomb.extend_from_slice(b"](h");
        bomb.push(i - 1);
        bomb.push(b'h');
        bomb.push(i - 1);
        bomb.extend_from_slice(b"eq");
        bomb.push(i);
    }
    cases.push(("memo bomb (2^64 copies)".into(), framed(bomb)));
    // A self-referencing list.
    cases.push((
        "list appended to itself".into(),
        framed(b"]q\x00h\x00a".to_vec()),
    ));
    // Nesting 100000 lists deep.
    let mut deep = b"(".repeat(100_000);
    deep.extend(b"l".repeat(100_000));
    cases.push(("100000 nested lists".into(), framed(deep)));
    // DUP repeated a million times.
    let mut dup = b"]".to_vec();
    dup.extend(b"2".repeat(1_000_000));
    cases.push(("a million DUPs".into(), framed(dup)));
    // A tensor whose size is 2^62 x 2^62 over a 6-element storage.
    let mut absurd = b"}(".to_vec();
    absurd.extend(pickle_str("w"));
    absurd.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    absurd.extend(pickle_str("storage"));
    absurd.extend_from_slice(b"ctorch\nFloatStorage\n");
    absurd.extend(pickle_str("0"));
    absurd.extend(pickle_str("cpu"));
    absurd.extend(pickle_int(6));
    absurd.extend_from_slice(b"NtQK\x00(");
    for _ in 0..2 {
        absurd.push(0x8a);
        absurd.push(8);
        absurd.extend_from_slice(&(1u64 << 62).to_le_bytes());
    }
    // Stride 0: every element reads the same storage value.
    absurd.extend_from_slice(b"t(K\x00K\x00t\x89ccollections\nOrderedDict\n)RtRu");
    cases.push(("tensor [2^62, 2^62] over 6 elements".into(), framed(absurd)));
    // A tensor expanded with stride 0 to 2^28 x 2^4 floats (1 GiB) from a 6-element storage.
    let mut expanded = b"}(".to_vec();
    expanded.extend(pickle_str("w"));
    expanded.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    expanded.extend(pickle_str("storage"));
    expanded.extend_from_slice(b"ctorch\nFloatStorage\n");
    expanded.extend(pickle_str("0"));
    expanded.extend(pickle_str("cpu"));
    expanded.extend(pickle_int(6));
    expanded.extend_from_slice(b"NtQK\x00(J\x00\x00\x00\x10K\x10t(K\x00K\x00t");
    expanded.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtRu");
    cases.push((
        "stride-0 tensor of 1 GiB over 6 elements".into(),
        framed(expanded),
    ));
    // A global that is not a tensor rebuild (code execution in Python).
    cases.push((
        "os.system global".into(),
        framed(b"cos\nsystem\n(X\x02\x00\x00\x00lstR".to_vec()),
    ));
    cases
        .into_iter()
        .map(|(name, main)| (name, legacy_pth(Some(main))))
        .collect()
}

/// Each target's seeds: small real files from the repository plus synthetic ones, and the
/// hand-made nasty inputs (which must not load).
fn seeds(target: Target) -> Vec<Seed> {
    let mut seeds = Vec::new();
    match target {
        Target::Safetensors => {
            for path in [
                "native_heads/bert/model.safetensors",
                "vit/deit/model.safetensors",
            ] {
                seeds.push(seed(path, read(&golden(path)), true));
            }
            seeds.push(seed("small", small_safetensors(), true));
            // The real MiniLM weights' header alone (the data is cut off), when fetched.
            let minilm = repo().join("models/all-MiniLM-L6-v2/model.safetensors");
            if let Ok(mut file) = std::fs::File::open(&minilm) {
                use std::io::Read;
                let mut prefix = vec![0u8; 1 << 16];
                let n = file.read(&mut prefix).unwrap_or(0);
                prefix.truncate(n);
                seeds.push(seed("MiniLM header", prefix, false));
            }
            let data = [0u8; 24];
            for (name, header) in [
                (
                    "absurd shape",
                    r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,24]}}"#,
                ),
                (
                    "shape whose product wraps to zero",
                    r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]},"x":{"dtype":"U8","shape":[24],"data_offsets":[0,24]}}"#,
                ),
                (
                    "unknown dtype",
                    r#"{"w":{"dtype":"F128","shape":[6],"data_offsets":[0,24]}}"#,
                ),
                (
                    "offsets past the end",
                    r#"{"w":{"dtype":"F32","shape":[6],"data_offsets":[0,18446744073709551615]}}"#,
                ),
                (
                    "offsets reversed",
                    r#"{"w":{"dtype":"F32","shape":[6],"data_offsets":[24,0]}}"#,
                ),
                (
                    "offsets whose width wraps",
                    r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[0,2305843009213693952]}}"#,
                ),
                (
                    "negative shape",
                    r#"{"w":{"dtype":"F32","shape":[-6],"data_offsets":[0,24]}}"#,
                ),
                ("not an object", r#"[1,2,3]"#),
                (
                    "deep metadata",
                    &format!(
                        r#"{{"__metadata__":{}1{}}}"#,
                        "[".repeat(100_000),
                        "]".repeat(100_000)
                    ),
                ),
            ] {
                seeds.push(seed(name, safetensors_with(header, &data), false));
            }
            let mut lying = small_safetensors();
            lying[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            seeds.push(seed("header length u64::MAX", lying, false));
            let mut lying = small_safetensors();
            lying[..8].copy_from_slice(&99_999_999u64.to_le_bytes());
            seeds.push(seed("header length just under the limit", lying, false));
        }
        Target::Folder => {
            for (dir, file) in [
                ("native_heads/bert", "config.json"),
                ("native_heads/bert", "model.safetensors"),
                ("text_families/distilbert", "config.json"),
                ("text_families/distilbert", "model.safetensors"),
                ("vit/deit", "config.json"),
                ("vit/deit", "model.safetensors"),
                ("convnext/timm-convnext", "config.json"),
                ("mobilenet_v3/timm-small", "config.json"),
                ("text_families/roberta", "pytorch_model.bin"),
            ] {
                let path = golden(dir).join(file);
                let mut s = seed(format!("{dir}/{file}"), read(&path), true);
                s.folder = Some((golden(dir), file));
                seeds.push(s);
            }
            // Configs that ask for enormous models over tiny weights.
            let config: serde_json::Value =
                serde_json::from_slice(&read(&golden("native_heads/bert/config.json"))).unwrap();
            for (key, value) in [
                ("hidden_size", 1u64 << 20),
                ("vocab_size", 1u64 << 40),
                ("num_hidden_layers", 1u64 << 32),
                ("intermediate_size", 1u64 << 36),
                ("max_position_embeddings", u64::MAX),
            ] {
                let mut c = config.clone();
                c[key] = value.into();
                let mut s = seed(
                    format!("bert config {key} = {value}"),
                    serde_json::to_vec(&c).unwrap(),
                    false,
                );
                s.folder = Some((golden("native_heads/bert"), "config.json"));
                seeds.push(s);
            }
            let config: serde_json::Value =
                serde_json::from_slice(&read(&golden("vit/deit/config.json"))).unwrap();
            for (key, value) in [("image_size", 1u64 << 20), ("patch_size", 0)] {
                let mut c = config.clone();
                c[key] = value.into();
                let mut s = seed(
                    format!("deit config {key} = {value}"),
                    serde_json::to_vec(&c).unwrap(),
                    false,
                );
                s.folder = Some((golden("vit/deit"), "config.json"));
                seeds.push(s);
            }
        }
        Target::Pth => {
            seeds.push(seed(
                "roberta pytorch_model.bin (zip)",
                read(&golden("text_families/roberta/pytorch_model.bin")),
                true,
            ));
            seeds.push(seed("legacy", legacy_pth(None), true));
            // The real Lite0 checkpoint's pickle (its storages cut off), when fetched.
            let lite0 = repo().join("models/efficientnet-lite0/efficientnet-lite0-57934424.pth");
            if let Ok(mut file) = std::fs::File::open(&lite0) {
                use std::io::Read;
                let mut prefix = vec![0u8; 1 << 15];
                let n = file.read(&mut prefix).unwrap_or(0);
                prefix.truncate(n);
                seeds.push(seed("Lite0 pickle prefix", prefix, false));
            }
            for (name, bytes) in nasty_pickles() {
                seeds.push(seed(name, bytes, false));
            }
        }
        Target::Tokenizer => {
            for dir in [
                "native_heads/bert",
                "text_families/roberta",
                "text_families/mpnet",
                "text_families/deberta-v3",
            ] {
                let path = golden(dir).join("tokenizer.json");
                seeds.push(seed(format!("{dir}/tokenizer.json"), read(&path), true));
            }
            let deep = format!(
                "{{\"model\":{}1{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            );
            seeds.push(seed("100000 nested arrays", deep.into_bytes(), false));
        }
        Target::Csv => {
            for name in ["train.csv", "test.csv"] {
                let path = repo().join("datasets/fine-foods-mini").join(name);
                seeds.push(seed(name, read(&path), true));
            }
            let mut huge_field = b"review,score\n\"".to_vec();
            huge_field.extend(b"x".repeat(1 << 20));
            huge_field.extend(b"\",a\n");
            seeds.push(seed("a 1 MiB field", huge_field, true));
        }
        Target::Jsonl => {
            // The CSV seed as JSON lines, with a label list on some lines.
            let mut reader =
                csv::Reader::from_path(repo().join("datasets/fine-foods-mini/test.csv")).unwrap();
            let mut jsonl = Vec::new();
            for (i, record) in reader.records().enumerate() {
                let record = record.unwrap();
                let label = if i % 3 == 0 {
                    serde_json::json!([record[2].to_string(), "x"])
                } else {
                    serde_json::json!(record[2].to_string())
                };
                let line = serde_json::json!({"review": &record[1], "score": label, "n": i});
                jsonl.extend(serde_json::to_vec(&line).unwrap());
                jsonl.push(b'\n');
            }
            seeds.push(seed("test.jsonl", jsonl, true));
            let deep = format!(
                "{{\"review\":{}\"x\"{}}}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            );
            seeds.push(seed("100000 nested arrays", deep.into_bytes(), false));
        }
        Target::Parquet => {
            let dir = repo().join("crates/graft-data/tests/data/parquet");
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.metadata().map(|m| m.len() < 32 << 10).unwrap_or(false))
                .collect();
            files.sort();
            for path in files {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let loads = !name.starts_with("null");
                seeds.push(seed(name, read(&path), loads));
            }
        }
        Target::Image => {
            seeds.push(seed(
                "chelsea_32.png",
                read(&golden("vision/chelsea_32.png")),
                true,
            ));
            let mnist = repo().join("datasets/fashion-mnist-mini/test/bag");
            if let Some(png) = std::fs::read_dir(&mnist)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
            {
                seeds.push(seed("fashion-mnist png", read(&png.path()), true));
            }
            let jpeg = jpeg_seed();
            seeds.push(seed("chelsea_32.jpg", jpeg.clone(), true));
            seeds.push(seed(
                "PNG of 100000 x 100000",
                png_declaring(100_000, 100_000),
                false,
            ));
            seeds.push(seed(
                "PNG of 2^31-1 x 2^31-1",
                png_declaring(0x7fff_ffff, 0x7fff_ffff),
                false,
            ));
            seeds.push(seed("PNG of 0 x 0", png_declaring(0, 0), false));
            // Just under the pixel bound, and just over it: real, tiny files.
            for (width, height, loads) in [(8000, 8000, true), (10_001, 10_000, false)] {
                let mut s = seed(
                    format!("gray PNG of {width} x {height}"),
                    png_of_zeros(width, height),
                    loads,
                );
                s.mutable = false;
                seeds.push(s);
            }
            seeds.push(seed(
                "JPEG of 65535 x 65535",
                jpeg_declaring(&jpeg, 65535, 65535),
                false,
            ));
        }
        Target::Config => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("configs"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            files.sort();
            for path in files {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                seeds.push(seed(name, read(&path), true));
            }
            let deep = format!(
                "[model]\nbackbone = {}\"x\"{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            );
            seeds.push(seed("100000 nested arrays", deep.into_bytes(), false));
            let tables = "[a.".repeat(50_000) + "b]\n";
            seeds.push(seed("a 50000-part table name", tables.into_bytes(), false));
            let inline = format!("x = {}{}\n", "{a=".repeat(100_000), "}".repeat(100_000));
            seeds.push(seed(
                "100000 nested inline tables",
                inline.into_bytes(),
                false,
            ));
        }
        Target::Labels => {
            seeds.push(seed(
                "labels.json",
                br#"["great", "other", "a|b"]"#.to_vec(),
                true,
            ));
            seeds.push(seed("labels.txt", b"great\nother\n".to_vec(), true));
            let deep = format!("{}\"x\"{}", "[".repeat(100_000), "]".repeat(100_000));
            seeds.push(seed("100000 nested arrays", deep.into_bytes(), false));
        }
        Target::TfIndex | Target::TfData => {
            // Google's BERT layout (TF1) and a Keras 2 checkpoint (TF2, with its object graph),
            // each with the other file of its pair beside it.
            for (name, prefix) in [
                (
                    "BERT bert_model.ckpt",
                    "tf_bert/uncased_L-2_H-32_A-4/bert_model.ckpt",
                ),
                ("Keras 2 ckpt", "tf2/keras2_checkpoint/ckpt"),
            ] {
                let index = golden(&format!("{prefix}.index"));
                let data = golden(&format!("{prefix}.data-00000-of-00001"));
                let (mutated, beside, file) = match target {
                    Target::TfIndex => (index, data, "ckpt.data-00000-of-00001"),
                    _ => (data, index, "ckpt.index"),
                };
                let mut s = seed(name, read(&mutated), true);
                s.folder = Some((beside, file));
                seeds.push(s);
            }
        }
        Target::Keras => {
            // Each Keras layout (the reader goes by the first bytes, not the extension), and
            // EfficientNets, whose `Normalization` layers hold integer datasets (`count`).
            for name in [
                "resnet_tiny.h5",
                "resnet_tiny_weights_tf_dim_ordering_tf_kernels.h5",
                "resnet_tiny.weights.h5",
                "resnet_tiny.keras",
                "mobilenet_v3_small_notop.h5",
                "efficientnet_b0.h5",
                "efficientnet_b0_notop.keras",
            ] {
                seeds.push(seed(name, read(&golden(&format!("keras/{name}"))), true));
            }
        }
    }
    seeds
}

// ---------------------------------------------------------------------------------------------
// Targets

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Safetensors,
    Folder,
    Pth,
    Tokenizer,
    Csv,
    Jsonl,
    Parquet,
    Image,
    Config,
    Labels,
    /// A TensorFlow checkpoint's `.index` table (beside its data shard).
    TfIndex,
    /// A TensorFlow checkpoint's data shard (beside its index).
    TfData,
    /// A Keras weight file (HDF5, or a `.keras` zip) and its conversion.
    Keras,
}

/// Each target and its share of the mutated cases (loading a whole folder costs the most).
const TARGETS: [(Target, usize); 13] = [
    (Target::Safetensors, 14),
    (Target::Folder, 8),
    (Target::Pth, 14),
    (Target::Tokenizer, 8),
    (Target::Csv, 10),
    (Target::Jsonl, 10),
    (Target::Parquet, 12),
    (Target::Image, 12),
    (Target::Config, 8),
    (Target::Labels, 4),
    (Target::TfIndex, 8),
    (Target::TfData, 4),
    (Target::Keras, 6),
];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Folder => "folder",
            Self::Pth => "pth",
            Self::Tokenizer => "tokenizer",
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Parquet => "parquet",
            Self::Image => "image",
            Self::Config => "config",
            Self::Labels => "labels",
            Self::TfIndex => "tf-index",
            Self::TfData => "tf-data",
            Self::Keras => "keras",
        }
    }

    /// Whether the text-aware mutations apply.
    fn is_text(self) -> bool {
        !matches!(
            self,
            Self::Safetensors
                | Self::Pth
                | Self::Parquet
                | Self::Image
                | Self::TfIndex
                | Self::TfData
                | Self::Keras
        )
    }

    fn file_name(self) -> &'static str {
        match self {
            Self::Safetensors => "model.safetensors",
            Self::Folder => "model",
            Self::Pth => "checkpoint.pth",
            Self::Tokenizer => "tokenizer.json",
            Self::Csv => "data.csv",
            Self::Jsonl => "data.jsonl",
            Self::Parquet => "data.parquet",
            Self::Image => "image.png",
            Self::Config => "graft.toml",
            Self::Labels => "labels.txt",
            Self::TfIndex => "ckpt.index",
            Self::TfData => "ckpt.data-00000-of-00001",
            Self::Keras => "model.h5",
        }
    }
}

/// How a case ended, when it ended well.
enum Outcome {
    Loaded,
    /// A clear error (its message).
    Refused(String),
}

/// Checks that an error names the file (or folder) it is about.
fn named(error: impl std::fmt::Display, path: &Path) -> Result<Outcome, String> {
    let message = error.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    if message.contains(name.as_ref()) {
        Ok(Outcome::Refused(message))
    } else {
        Err(format!("the error does not name {name}: {message}"))
    }
}

/// The bytes a safetensors tensor of this dtype and shape needs, or `None` on overflow.
fn tensor_bytes(dtype: &serde_json::Value, shape: &[u64]) -> Option<u64> {
    let dtype: safetensors::Dtype = serde_json::from_value(dtype.clone()).ok()?;
    let bits = shape
        .iter()
        .try_fold(dtype.bitsize() as u64, |acc, &d| acc.checked_mul(d))?;
    Some(bits.div_ceil(8))
}

/// Runs one input through `target`'s loaders in `dir`.
fn run_target(target: Target, seed: &Seed, bytes: &[u8], dir: &Path) -> Result<Outcome, String> {
    let path = dir.join(target.file_name());
    if target != Target::Folder {
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    }
    match target {
        Target::Safetensors => match graft_model::WeightsIndex::read(&path) {
            Err(e) => named(e, &path),
            Ok(index) => {
                // Every tensor the index accepts must fit the file with the size its dtype and
                // shape imply, computed without overflow.
                let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                let header: serde_json::Value =
                    serde_json::from_slice(&bytes[8..8 + header_len as usize])
                        .map_err(|e| format!("accepted an unreadable header: {e}"))?;
                for (name, info) in &index.tensors {
                    let entry = &header[name];
                    let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
                    let size = tensor_bytes(&entry["dtype"], &shape)
                        .ok_or_else(|| format!("accepted `{name}` whose size overflows"))?;
                    let offsets = &entry["data_offsets"];
                    let (begin, end) = (offsets[0].as_u64(), offsets[1].as_u64());
                    let fits = matches!((begin, end), (Some(b), Some(e))
                        if e >= b && e - b == size && e <= bytes.len() as u64 - 8 - header_len);
                    if !fits {
                        return Err(format!(
                            "accepted `{name}` {entry} that does not fit the file"
                        ));
                    }
                    let _ = info.numel();
                }
                let _ = index.num_parameters();
                Ok(Outcome::Loaded)
            }
        },
        Target::Folder => {
            let (source, file) = seed.folder.as_ref().expect("a folder seed");
            let model = dir.join("model");
            let _ = std::fs::remove_dir_all(&model);
            std::fs::create_dir_all(&model).map_err(|e| e.to_string())?;
            for entry in std::fs::read_dir(source).map_err(|e| e.to_string())? {
                let entry = entry.map_err(|e| e.to_string())?;
                let name = entry.file_name();
                // A checkpoint-only folder: the PyTorch file replaces model.safetensors.
                if *file == "pytorch_model.bin" && name == "model.safetensors" {
                    continue;
                }
                std::fs::copy(entry.path(), model.join(&name)).map_err(|e| e.to_string())?;
            }
            std::fs::write(model.join(file), bytes).map_err(|e| e.to_string())?;
            let load = || -> Result<(), graft_model::ModelError> {
                let folder = graft_model::ModelFolder::open(&model)?;
                folder.preprocessing()?;
                folder.native_head()?;
                let options = graft_model::PoolingOptions {
                    pooling: graft_model::Pooling::Mean,
                    use_pooler: false,
                    normalize: false,
                };
                #[allow(deprecated)]
                let device = Device::flex();
                graft_model::Backbone::load(&folder, options, false, &device)?;
                Ok(())
            };
            match load() {
                Ok(()) => Ok(Outcome::Loaded),
                Err(e) => {
                    let message = e.to_string();
                    // The error names the folder or a file in it (a gathered checkpoint's
                    // errors name the checkpoint).
                    if message.contains(&*model.to_string_lossy()) {
                        Ok(Outcome::Refused(message))
                    } else {
                        Err(format!("the error does not name the folder: {message}"))
                    }
                }
            }
        }
        Target::Pth => match graft_model::pth::read_tensors(&path, None) {
            Err(e) => named(e, &path),
            Ok((tensors, _)) => {
                for t in tensors {
                    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
                    let dtype = serde_json::to_value(t.dtype).unwrap();
                    if tensor_bytes(&dtype, &shape) != Some(t.bytes.len() as u64) {
                        return Err(format!(
                            "tensor `{}` {:?} {:?} has {} bytes",
                            t.name,
                            t.dtype,
                            t.shape,
                            t.bytes.len()
                        ));
                    }
                }
                Ok(Outcome::Loaded)
            }
        },
        Target::TfIndex | Target::TfData => {
            let (beside, file) = seed.folder.as_ref().expect("the other file of the pair");
            std::fs::copy(beside, dir.join(file)).map_err(|e| e.to_string())?;
            let read = || -> Result<(), graft_model::ModelError> {
                let bundle = graft_model::tf_bundle::TensorBundle::open(&dir.join("ckpt"))?;
                for (name, tensor) in bundle.tensors() {
                    let bytes = bundle.bytes(name)?;
                    if let Some(width) = tensor.dtype.size() {
                        let count: usize = tensor.shape.iter().product();
                        if bytes.len() != count * width {
                            return Err(graft_model::ModelError::Config {
                                path: PathBuf::from("accepted"),
                                message: format!("`{name}` of {} bytes", bytes.len()),
                            });
                        }
                    }
                }
                graft_model::tf_objects::tracked_variables(&bundle)?;
                Ok(())
            };
            match read() {
                Ok(()) => Ok(Outcome::Loaded),
                Err(e) => {
                    let message = e.to_string();
                    if message.contains("ckpt.index") || message.contains("ckpt.data") {
                        Ok(Outcome::Refused(message))
                    } else {
                        Err(format!(
                            "the error names neither file of the bundle: {message}"
                        ))
                    }
                }
            }
        }
        Target::Keras => match graft_model::keras::KerasFile::open(&path) {
            Err(e) => named(e, &path),
            Ok(file) => {
                for weight in file.layers.iter().flat_map(|l| &l.weights) {
                    if weight.values.len() != weight.shape.iter().product::<usize>() {
                        return Err(format!(
                            "`{}` {:?} holds {} values",
                            weight.path,
                            weight.shape,
                            weight.values.len()
                        ));
                    }
                }
                match graft_model::keras_applications::convert_layers(&file) {
                    Err(e) => named(e, &path),
                    Ok(_) => Ok(Outcome::Loaded),
                }
            }
        },
        Target::Tokenizer => match graft_data::TextTokenizer::from_file(&path, 64, usize::MAX) {
            Err(e) => named(e, &path),
            Ok(tokenizer) => {
                let long = "tokenize me ".repeat(500);
                let texts = ["hello world", "ünïcödé 😀 \u{0} \t", "", long.as_str()];
                if let Ok(tokens) = tokenizer.tokenize(&texts) {
                    if tokens.iter().any(|t| t.ids.len() > 64) {
                        return Err("a text longer than max_length after truncation".into());
                    }
                    let padded = graft_data::TokenBatch::pad(&tokens.iter().collect::<Vec<_>>());
                    if padded.input_ids.len() != padded.batch * padded.seq_len {
                        return Err("a padded batch of the wrong size".into());
                    }
                }
                Ok(Outcome::Loaded)
            }
        },
        Target::Csv | Target::Jsonl => {
            let format = if target == Target::Csv {
                graft_data::DataFormat::Csv
            } else {
                graft_data::DataFormat::Jsonl
            };
            let read = graft_data::read_texts(&path, format, "review", Some("score"));
            let columns = graft_data::table::columns(&path, format, 100);
            let lines = graft_data::read_texts(&path, graft_data::DataFormat::Lines, "", None);
            for result in [columns.map(|_| ()), lines.map(|_| ())] {
                if let Err(e) = result {
                    named(e, &path)?;
                }
            }
            match read {
                Ok(examples) => {
                    for example in &examples {
                        if let Some(label) = &example.label {
                            let _ = graft_data::label_list(label, "|");
                        }
                    }
                    let _ = graft_data::regression_values(&examples, &path);
                    Ok(Outcome::Loaded)
                }
                Err(e) => named(e, &path),
            }
        }
        Target::Parquet => {
            let columns = match graft_data::parquet::read_columns(&path, 100) {
                Ok(columns) => columns,
                Err(e) => return named(e, &path),
            };
            let first = columns.first().map(|c| c.0.clone()).unwrap_or_default();
            let label = columns
                .iter()
                .find(|c| c.0 == "label" || c.0 == "labels")
                .map(|c| c.0.clone());
            if let Err(e) = graft_data::table::columns(&path, graft_data::DataFormat::Parquet, 5) {
                named(e, &path)?;
            }
            match graft_data::read_texts(
                &path,
                graft_data::DataFormat::Parquet,
                &first,
                label.as_deref(),
            ) {
                Ok(_) => Ok(Outcome::Loaded),
                Err(e) => named(e, &path),
            }
        }
        Target::Image => {
            let decoded = graft_data::image::decode_rgb(bytes, &path);
            let read = graft_data::image::read_rgb(&path);
            match (decoded, read) {
                (Ok(image), Ok((again, _))) => {
                    let (w, h) = image.dimensions();
                    if image.as_raw().len() != w as usize * h as usize * 3 || image != again {
                        return Err("a decoded image of the wrong size".into());
                    }
                    Ok(Outcome::Loaded)
                }
                (Err(e), Err(_)) => named(e, &path),
                (a, b) => Err(format!(
                    "decode_rgb and read_rgb disagree: {:?} vs {:?}",
                    a.map(|i| i.dimensions()).map_err(|e| e.to_string()),
                    b.map(|i| i.0.dimensions()).map_err(|e| e.to_string())
                )),
            }
        }
        Target::Config => match graft_train::Config::from_file(&path) {
            Ok(_) => Ok(Outcome::Loaded),
            Err(e) => named(e, &path),
        },
        Target::Labels => {
            let _ = graft_data::label_list(&String::from_utf8_lossy(bytes), "|");
            match graft_data::LabelSet::from_file(&path) {
                Ok(_) => Ok(Outcome::Loaded),
                Err(e) => named(e, &path),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The driver

/// One case to run: which input, how it was mutated, and how to name it for a replay.
struct Case {
    label: String,
    target: Target,
    seed: Seed,
    bytes: Vec<u8>,
    /// The unmutated seed: it must load when the seed says so.
    pristine: bool,
}

/// The message of the last panic on a worker thread (the hook prints nothing there).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);
static HOOKED: AtomicBool = AtomicBool::new(false);

fn install_panic_hook() {
    if HOOKED.swap(true, Ordering::SeqCst) {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("fuzz-worker") {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let location = info.location().map(|l| l.to_string()).unwrap_or_default();
            *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{message} at {location}"));
        } else {
            default(info);
        }
    }));
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// The case `index` of a run seeded with `seed`: its own generator, so any case replays alone.
fn make_case(
    seed: u64,
    index: u64,
    all_seeds: &[(Target, Vec<Seed>)],
    weights: &[(Target, usize)],
) -> Case {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93));
    let total: usize = weights.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(total);
    let target = weights
        .iter()
        .find(|(_, w)| {
            if roll < *w {
                true
            } else {
                roll -= w;
                false
            }
        })
        .unwrap()
        .0;
    let seeds: Vec<&Seed> = all_seeds
        .iter()
        .find(|(t, _)| *t == target)
        .unwrap()
        .1
        .iter()
        .filter(|s| s.mutable)
        .collect();
    let chosen = (*rng.pick(&seeds)).clone();
    let mut bytes = chosen.bytes.clone();
    let mut ops = Vec::new();
    let count = 1 + rng.below(4);
    for _ in 0..count {
        ops.push(mutate(&mut bytes, &mut rng, target.is_text()));
    }
    // Sometimes splice in a second seed of the same target.
    if rng.chance(16) {
        let other = *rng.pick(&seeds);
        let at = rng.below(bytes.len() + 1);
        let from = rng.below(other.bytes.len() + 1);
        bytes.truncate(at);
        bytes.extend_from_slice(&other.bytes[from..]);
        ops.push(format!("splice `{}` from {from} at {at}", other.name));
    }
    Case {
        label: format!(
            "GRAFT_FUZZ_SEED={seed} GRAFT_FUZZ_CASE={index} [{}] seed `{}`: {}",
            target.name(),
            chosen.name,
            ops.join(", ")
        ),
        target,
        seed: chosen,
        bytes,
        pristine: false,
    }
}

/// What the worker sends back for a case.
type Report = Result<Outcome, String>;

#[test]
fn loaders_survive_mutated_inputs() {
    install_panic_hook();
    let cases = env_u64("GRAFT_FUZZ_CASES").unwrap_or(5000);
    let seed = env_u64("GRAFT_FUZZ_SEED").unwrap_or(0x6772_6166_7421);
    let only_case = env_u64("GRAFT_FUZZ_CASE");
    let only_target = std::env::var("GRAFT_FUZZ_TARGET").ok();
    let timeout = Duration::from_millis(env_u64("GRAFT_FUZZ_TIMEOUT_MS").unwrap_or(5000));
    let work = tempfile::tempdir().unwrap();
    // Gathered checkpoints go to a private cache; nothing is fetched from the network.
    // SAFETY: set before the worker thread starts; no other test runs in this binary.
    unsafe {
        std::env::set_var("GRAFT_CACHE_DIR", work.path().join("cache"));
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let weights: Vec<(Target, usize)> = TARGETS
        .iter()
        .copied()
        .filter(|(t, _)| only_target.as_deref().is_none_or(|o| t.name().contains(o)))
        .collect();
    assert!(!weights.is_empty(), "no target matches GRAFT_FUZZ_TARGET");
    let all_seeds: Vec<(Target, Vec<Seed>)> = weights.iter().map(|&(t, _)| (t, seeds(t))).collect();
    eprintln!(
        "fuzz: GRAFT_FUZZ_SEED={seed}, {cases} mutated cases over {} targets, {} ms per case",
        weights.len(),
        timeout.as_millis()
    );

    // The cases, made lazily: first every seed as it is (the hand-made nasty ones included),
    // then the mutated ones.
    let pristine: Vec<Case> = if only_case.is_some() {
        Vec::new()
    } else {
        all_seeds
            .iter()
            .flat_map(|(target, seeds)| {
                seeds.iter().map(move |s| Case {
                    label: format!("[{}] seed `{}` as it is", target.name(), s.name),
                    target: *target,
                    seed: s.clone(),
                    bytes: s.bytes.clone(),
                    pristine: true,
                })
            })
            .collect()
    };
    let indices: Box<dyn Iterator<Item = u64>> = match only_case {
        Some(i) => Box::new(std::iter::once(i)),
        None => Box::new(0..cases),
    };

    // One worker thread runs the cases (with the 8 MiB stack of a main thread); this thread
    // enforces the time limit.
    let (to_worker, jobs) = std::sync::mpsc::channel::<Case>();
    let (to_driver, reports) = std::sync::mpsc::channel::<(Report, Duration)>();
    let dir = work.path().join("case");
    std::fs::create_dir_all(&dir).unwrap();
    let worker_dir = dir.clone();
    std::thread::Builder::new()
        .name("fuzz-worker".into())
        .stack_size(8 << 20)
        .spawn(move || {
            for case in jobs {
                let started = Instant::now();
                *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_target(case.target, &case.seed, &case.bytes, &worker_dir)
                }));
                let report = match run {
                    Ok(report) => report,
                    Err(_) => {
                        let message = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
                        Err(format!("panicked: {}", message.unwrap_or_default()))
                    }
                };
                if to_driver.send((report, started.elapsed())).is_err() {
                    break;
                }
            }
        })
        .unwrap();

    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut stats: std::collections::BTreeMap<&str, (usize, usize, Duration)> = Default::default();
    let mut slowest = (Duration::ZERO, String::new());
    let mut run = |case: Case, failures: &mut Vec<String>| -> bool {
        *CURRENT.lock().unwrap() = case.label.clone();
        REFUSED.store(0, Ordering::SeqCst);
        let (target, label, loads, pristine) = (
            case.target,
            case.label.clone(),
            case.seed.loads,
            case.pristine,
        );
        to_worker.send(case).unwrap();
        let (report, took) = match reports.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => {
                failures.push(format!("{label}: still running after {timeout:?}"));
                return false;
            }
        };
        let refused = REFUSED.swap(0, Ordering::SeqCst);
        let entry = stats.entry(target.name()).or_default();
        entry.2 += took;
        if took > slowest.0 {
            slowest = (took, label.clone());
        }
        if refused > 0 {
            failures.push(format!(
                "{label}: asked for an allocation of {refused} bytes (bound {MAX_ALLOCATION})"
            ));
        }
        match report {
            Ok(Outcome::Loaded) => entry.0 += 1,
            Ok(Outcome::Refused(message)) => {
                entry.1 += 1;
                if pristine && !loads {
                    let short: String = message.chars().take(160).collect();
                    eprintln!("fuzz: {label}: {short}");
                }
                if pristine && loads {
                    failures.push(format!("{label}: the unmutated seed must load: {message}"));
                }
            }
            Err(message) => failures.push(format!("{label}: {message}")),
        }
        true
    };
    for case in pristine {
        if !run(case, &mut failures) {
            break;
        }
    }
    if failures.is_empty() || only_case.is_some() {
        for index in indices {
            let case = make_case(seed, index, &all_seeds, &weights);
            if !run(case, &mut failures) || failures.len() >= 20 {
                break;
            }
        }
    }
    for (target, (loaded, refused, took)) in &stats {
        eprintln!(
            "fuzz: {target:>12}: {loaded:>6} loaded, {refused:>6} refused, {:>7.2} s",
            took.as_secs_f64()
        );
    }
    eprintln!(
        "fuzz: {:.1} s in all; slowest case {:.2} s: {}; peak live memory {} MiB",
        started.elapsed().as_secs_f64(),
        slowest.0.as_secs_f64(),
        slowest.1,
        PEAK.load(Ordering::Relaxed) >> 20
    );
    assert!(
        failures.is_empty(),
        "{} failing case(s) (replay one with the variables it names):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
