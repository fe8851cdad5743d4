//! Reads a pg_dump custom-format archive (`-Fc -Z0`) as it streams past and
//! computes each table's row count and checksum from the COPY data itself,
//! so a backup needs no second scan of the tables on the server.
//!
//! A table's checksum is the wrapping sum of the xxh3-64 hashes of its COPY
//! text lines: independent of row order. `verify` computes the same sum from
//! `COPY ... TO STDOUT` on the restored database (see [`LineHasher`]).
//!
//! The archive layout (pg_backup_archiver.c, pg_backup_custom.c): a header,
//! the table of contents, then one data block per entry that has data. An
//! integer is a sign byte plus `intSize` little-endian bytes; a string is an
//! integer length (-1 for NULL) plus its bytes. Anything this reader does not
//! understand makes it give up, and the caller falls back to reading the
//! checksums from the server.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64;

use super::TableStat;

/// Row count and order-independent hash of COPY text lines.
#[derive(Debug, Default, Clone)]
pub struct LineHasher {
    partial: Vec<u8>,
    rows: i64,
    sum: u64,
    /// `\.` seen: the rest of the data block is padding.
    ended: bool,
}

/// Call `line` for every complete line (without its `\n`) in `data`; the
/// unfinished end waits in `partial` for the next piece.
pub fn lines(partial: &mut Vec<u8>, mut data: &[u8], mut line: impl FnMut(&[u8])) {
    while let Some(i) = memchr::memchr(b'\n', data) {
        if partial.is_empty() {
            line(&data[..i]);
        } else {
            partial.extend_from_slice(&data[..i]);
            line(partial);
            partial.clear();
        }
        data = &data[i + 1..];
    }
    partial.extend_from_slice(data);
}

impl LineHasher {
    pub fn feed(&mut self, data: &[u8]) {
        if self.ended {
            return;
        }
        let mut partial = std::mem::take(&mut self.partial);
        lines(&mut partial, data, |l| self.line(l));
        self.partial = partial;
    }

    fn line(&mut self, line: &[u8]) {
        if self.ended {
            return;
        }
        if line == b"\\." {
            self.ended = true;
            return;
        }
        self.rows += 1;
        self.sum = self.sum.wrapping_add(xxh3_64(line));
    }

    pub fn finish(self) -> TableStat {
        TableStat { rows: self.rows, checksum: format!("copy:{:016x}", self.sum) }
    }
}

/// Archive format versions (major.minor.revision packed like pg_dump's MAKE_ARCHIVE_VERSION).
const fn vers(minor: u32) -> u32 {
    (1 << 16) | (minor << 8)
}

/// A table of contents larger than this is taken for a misreading.
const MAX_TOC: usize = 512 << 20;

const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

#[derive(Debug)]
enum State {
    /// Collecting the header and the table of contents.
    Toc,
    /// Expecting a block header (type byte + dump id).
    Block,
    /// Expecting a chunk length, or (between large objects, `in_blob` false) an oid.
    ChunkLen {
        dump_id: i64,
        blobs: bool,
        in_blob: bool,
    },
    /// Inside a chunk: this many bytes left.
    Chunk {
        dump_id: i64,
        blobs: bool,
        left: usize,
    },
    Failed,
}

/// Incremental reader: [`Scanner::feed`] it every byte pg_dump writes.
pub struct Scanner {
    state: State,
    buf: Vec<u8>,
    int_size: usize,
    /// Table data entries by dump id.
    entries: HashMap<i64, (String, Option<String>)>,
    hashers: HashMap<i64, LineHasher>,
    error: Option<String>,
}

/// Cursor over the bytes collected so far; `None` means "need more bytes".
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl Cur<'_> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn int(&mut self) -> Option<i64> {
        let sign = self.byte()?;
        let bytes = self.b.get(self.pos..self.pos + self.int_size)?;
        self.pos += self.int_size;
        let v = bytes.iter().rev().fold(0i64, |acc, &x| (acc << 8) | x as i64);
        Some(if sign == 0 { v } else { -v })
    }
    /// `Some(None)` is a NULL string.
    fn str(&mut self) -> Option<Option<String>> {
        let len = self.int()?;
        if len < 0 {
            return Some(None);
        }
        let bytes = self.b.get(self.pos..self.pos + len as usize)?;
        self.pos += len as usize;
        Some(Some(String::from_utf8_lossy(bytes).into_owned()))
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.b.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(())
    }
}

/// Result of parsing the header and table of contents.
struct Toc {
    int_size: usize,
    /// Table data entries: dump id → (table name as `quote_ident` writes it, data file name in a directory archive).
    entries: HashMap<i64, (String, Option<String>)>,
}

const FORMAT_CUSTOM: u8 = 1;
const FORMAT_DIRECTORY: u8 = 3;

/// Table data entries of a directory-format archive's `toc.dat`: data file name → table name.
pub fn directory_tables(toc_dat: &[u8]) -> Result<HashMap<String, String>, String> {
    match parse_toc(toc_dat, FORMAT_DIRECTORY)? {
        None => Err("toc.dat ends early".into()),
        Some((toc, _)) => Ok(toc.entries.into_values().filter_map(|(key, file)| Some((file?, key))).collect()),
    }
}

fn parse_toc(b: &[u8], want_format: u8) -> Result<Option<(Toc, usize)>, String> {
    let mut c = Cur { b, pos: 0, int_size: 4 };
    macro_rules! need {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    let magic = need!(b.get(..5));
    if magic != b"PGDMP" {
        return Err("not a pg_dump custom-format archive".into());
    }
    c.pos = 5;
    let (maj, min, rev) = (need!(c.byte()), need!(c.byte()), need!(c.byte()));
    let version = ((maj as u32) << 16) | ((min as u32) << 8) | rev as u32;
    if maj != 1 || version < vers(12) || min > 16 {
        return Err(format!("archive version {maj}.{min}.{rev} is not one this reader knows"));
    }
    c.int_size = need!(c.byte()) as usize;
    if !(1..=8).contains(&c.int_size) {
        return Err(format!("integer size {} in the archive header", c.int_size));
    }
    let off_size = need!(c.byte()) as usize;
    let format = need!(c.byte());
    if format != want_format {
        return Err(format!("archive format {format}, expected {want_format}"));
    }
    let compressed = if version >= vers(15) { need!(c.byte()) != 0 } else { need!(c.int()) != 0 };
    if compressed {
        return Err("the archive's data is compressed".into());
    }
    for _ in 0..7 {
        need!(c.int()); // creation time
    }
    need!(c.str()); // database name
    need!(c.str()); // server version
    need!(c.str()); // pg_dump version
    let count = need!(c.int());
    let mut entries = HashMap::new();
    for _ in 0..count {
        let dump_id = need!(c.int());
        need!(c.int()); // had dumper
        need!(c.str()); // table oid
        need!(c.str()); // oid
        let tag = need!(c.str()).unwrap_or_default();
        let desc = need!(c.str()).unwrap_or_default();
        need!(c.int()); // section
        need!(c.str()); // defn
        need!(c.str()); // drop statement
        let copy = need!(c.str());
        let namespace = need!(c.str()).unwrap_or_default();
        need!(c.str()); // tablespace
        if version >= vers(14) {
            need!(c.str()); // table access method
        }
        if version >= vers(16) {
            need!(c.int()); // relkind
        }
        need!(c.str()); // owner
        need!(c.str()); // "false" (WITH OIDS)
        while need!(c.str()).is_some() {} // dependencies, NULL-terminated
        let file = if format == FORMAT_DIRECTORY {
            need!(c.str()) // data file name
        } else {
            need!(c.byte()); // data offset flag
            need!(c.skip(off_size));
            None
        };
        if desc == "TABLE DATA" && copy.is_some_and(|s| s.starts_with("COPY ")) {
            entries.insert(dump_id, (format!("{}.{}", quote_ident(&namespace), quote_ident(&tag)), file));
        }
    }
    Ok(Some((Toc { int_size: c.int_size, entries }, c.pos)))
}

/// PostgreSQL's `quote_ident`: quotes unless the name is a plain lower-case identifier.
fn quote_ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        s.to_string()
    } else {
        crate::engine::sql::pg_ident(s)
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Toc,
            buf: Vec::new(),
            int_size: 4,
            entries: HashMap::new(),
            hashers: HashMap::new(),
            error: None,
        }
    }
}

impl Scanner {
    pub fn feed(&mut self, data: &[u8]) {
        if matches!(self.state, State::Failed) {
            return;
        }
        if self.buf.is_empty() {
            self.process(data);
        } else {
            // An item was cut at the end of the last piece: continue from it.
            let mut joined = std::mem::take(&mut self.buf);
            joined.extend_from_slice(data);
            self.process(&joined);
        }
    }

    fn fail(&mut self, e: String) {
        self.error.get_or_insert(e);
        self.state = State::Failed;
        self.buf = Vec::new();
    }

    /// Consume `input`; an incomplete structured item at its end is kept in `buf`.
    fn process(&mut self, input: &[u8]) {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let mut c = Cur { b: rest, pos: 0, int_size: self.int_size };
            let next = match self.state {
                State::Failed => return,
                State::Chunk { dump_id, blobs, left } => {
                    let n = left.min(rest.len());
                    if !blobs {
                        if let Some(h) = self.hashers.get_mut(&dump_id) {
                            h.feed(&rest[..n]);
                        }
                    }
                    pos += n;
                    self.state = if n == left {
                        State::ChunkLen { dump_id, blobs, in_blob: true }
                    } else {
                        State::Chunk { dump_id, blobs, left: left - n }
                    };
                    continue;
                }
                State::Toc => match parse_toc(rest, FORMAT_CUSTOM) {
                    Ok(None) if rest.len() > MAX_TOC => {
                        return self.fail(format!("no end of the table of contents in the first {MAX_TOC} bytes"))
                    }
                    Ok(None) => None,
                    Ok(Some((toc, used))) => {
                        self.int_size = toc.int_size;
                        self.hashers = toc.entries.keys().map(|k| (*k, LineHasher::default())).collect();
                        self.entries = toc.entries;
                        c.pos = used;
                        Some(State::Block)
                    }
                    Err(e) => return self.fail(e),
                },
                State::Block => match (c.byte(), c.int()) {
                    (Some(BLK_DATA), Some(dump_id)) => Some(State::ChunkLen { dump_id, blobs: false, in_blob: true }),
                    (Some(BLK_BLOBS), Some(dump_id)) => Some(State::ChunkLen { dump_id, blobs: true, in_blob: false }),
                    (Some(k), Some(_)) => return self.fail(format!("unknown block type {k} in the archive")),
                    _ => None,
                },
                State::ChunkLen { dump_id, blobs, in_blob } => match c.int() {
                    None => None,
                    Some(v) => Some(match (blobs, in_blob, v) {
                        // End of a table's data.
                        (false, _, 0) => State::Block,
                        (false, _, n) if n > 0 => State::Chunk { dump_id, blobs, left: n as usize },
                        // Large objects: (oid, chunks..., 0)..., 0.
                        (true, false, 0) => State::Block,
                        (true, false, _oid) => State::ChunkLen { dump_id, blobs, in_blob: true },
                        (true, true, 0) => State::ChunkLen { dump_id, blobs, in_blob: false },
                        (true, true, n) if n > 0 => State::Chunk { dump_id, blobs, left: n as usize },
                        (_, _, n) => return self.fail(format!("negative chunk length {n} in the archive")),
                    }),
                },
            };
            match next {
                Some(s) => {
                    self.state = s;
                    pos += c.pos;
                }
                None => {
                    self.buf = rest.to_vec();
                    return;
                }
            }
        }
    }

    /// Per-table statistics, or why the archive could not be read. Tables
    /// whose data block never arrived are reported missing.
    pub fn finish(self) -> Result<std::collections::BTreeMap<String, TableStat>, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !matches!(self.state, State::Block) {
            return Err("the archive ended early".into());
        }
        let mut hashers = self.hashers;
        let mut out = std::collections::BTreeMap::new();
        for (id, (key, _)) in self.entries {
            out.insert(key, hashers.remove(&id).unwrap_or_default().finish());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_feeds_hash_like_whole_lines() {
        let mut a = LineHasher::default();
        a.feed(b"1\tx\n2\ty\\nz\n3\t\\N\n\\.\n\n\n");
        let mut b = LineHasher::default();
        for piece in [&b"1\t"[..], b"x\n2", b"\ty\\nz\n3\t\\N", b"\n"] {
            b.feed(piece);
        }
        let (a, b) = (a.finish(), b.finish());
        assert_eq!(a.rows, 3);
        assert_eq!(a, b);
        // Order does not matter; content does.
        let mut c = LineHasher::default();
        c.feed(b"3\t\\N\n1\tx\n2\ty\\nz\n");
        assert_eq!(c.finish(), a);
        let mut d = LineHasher::default();
        d.feed(b"3\t\\N\n1\tx\n2\ty\\nZ\n");
        assert_ne!(d.finish().checksum, a.checksum);
    }

    #[test]
    fn names_are_quoted_like_quote_ident() {
        assert_eq!(quote_ident("t_1"), "t_1");
        assert_eq!(quote_ident("We"), "\"We\"");
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let mut s = Scanner::default();
        s.feed(b"PGDMP\x09\x09\x09garbage");
        assert!(s.finish().is_err());
        let mut s = Scanner::default();
        s.feed(b"not a dump at all");
        assert!(s.finish().unwrap_err().contains("not a pg_dump"));
    }
}
