//! Content-addressed blobs under `<root>/blobs/<alg>/<hex>`.
//!
//! Invariants: a blob file is only ever created by renaming a fully written,
//! fsynced and verified temp file from `<root>/tmp` into place, so a visible
//! blob is always complete; blob files are never modified; reads are verified
//! against the digest.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ingot_oci::digest::{HashingWriter, VerifyingReader};
use ingot_oci::{Algorithm, Digest};

use crate::error::{Result, StoreError};

/// The blob area of a store root.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Blobs {
    pub(crate) fn new(root: &Path) -> Blobs {
        Blobs {
            dir: root.join("blobs"),
            tmp: root.join("tmp"),
        }
    }

    pub(crate) fn create_dirs(&self) -> io::Result<()> {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            fs::create_dir_all(self.dir.join(alg.as_str()))?;
        }
        fs::create_dir_all(&self.tmp)
    }

    /// Where the blob `d` lives (whether or not it exists).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.algorithm().as_str()).join(d.hex())
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn exists(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Size of a stored blob.
    pub fn size(&self, d: &Digest) -> Result<u64> {
        match fs::metadata(self.path(d)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobMissing(d.clone())),
            Err(e) => Err(StoreError::io(self.path(d))(e)),
        }
    }

    /// Opens a blob for reading; the reader fails at the end if the content
    /// does not hash to `d`.
    pub fn open(&self, d: &Digest) -> Result<VerifyingReader<File>> {
        let path = self.path(d);
        let f = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobMissing(d.clone()),
            _ => StoreError::io(&path)(e),
        })?;
        Ok(VerifyingReader::new(f, d.clone(), None))
    }

    /// Reads a whole blob and verifies it.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let path = self.path(d);
        self.open(d)?
            .read_to_end(&mut buf)
            .map_err(|e| self.read_error(d, &path, e))?;
        Ok(buf)
    }

    /// Maps a read error of blob `d` to the store's typed error.
    pub(crate) fn read_error(&self, d: &Digest, path: &Path, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::InvalidData {
            // Re-hash to report what the content actually is.
            if let Ok(actual) = hash_file(path, d.algorithm()) {
                return StoreError::DigestMismatch {
                    expected: d.clone(),
                    actual,
                };
            }
        }
        StoreError::io(path)(e)
    }

    /// Starts writing a new blob. With `expected`, the commit fails unless
    /// the content matches it.
    pub fn writer(&self, expected: Option<Digest>) -> Result<BlobWriter> {
        let name = format!(
            "{}-{}-{}.tmp",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed),
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        );
        let path = self.tmp.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        let alg = expected.as_ref().map_or(Algorithm::Sha256, Digest::algorithm);
        Ok(BlobWriter {
            inner: Some(HashingWriter::new(BufWriter::with_capacity(1 << 20, file), alg)),
            tmp: path,
            blobs: self.clone(),
            expected,
        })
    }

    /// Moves a complete file whose content the caller has verified to hash
    /// to `digest` into place: fsync, rename, fsync the directory. The file
    /// must be on the store's file system (the registry's uploads are under
    /// the root). If the blob already exists the file is removed instead.
    pub fn install(&self, file: &Path, digest: &Digest) -> Result<()> {
        let dest = self.path(digest);
        if dest.is_file() {
            fs::remove_file(file).map_err(StoreError::io(file))?;
            return Ok(());
        }
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::io(file))?;
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        }
        fs::rename(file, &dest).map_err(StoreError::io(&dest))?;
        if let Some(dir) = dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::io(dir))?;
        }
        Ok(())
    }

    /// Stores `data` and returns its digest.
    pub fn put(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::sha256(data);
        if self.exists(&d) {
            return Ok(d);
        }
        let mut w = self.writer(Some(d.clone()))?;
        w.write_all(data).map_err(StoreError::io(w.tmp.clone()))?;
        Ok(w.commit()?.0)
    }

    /// Every stored blob digest, unordered. Files with names that are not
    /// digests are reported separately.
    pub fn list(&self) -> Result<(Vec<Digest>, Vec<PathBuf>)> {
        let mut good = Vec::new();
        let mut odd = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.dir.join(alg.as_str());
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&dir)(e)),
            };
            for e in entries {
                let e = e.map_err(StoreError::io(&dir))?;
                let name = e.file_name();
                match name.to_str().and_then(|n| format!("{alg}:{n}").parse::<Digest>().ok()) {
                    Some(d) => good.push(d),
                    None => odd.push(e.path()),
                }
            }
        }
        Ok((good, odd))
    }

    /// Removes a blob (GC only).
    pub(crate) fn remove(&self, d: &Digest) -> Result<u64> {
        let path = self.path(d);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }
}

/// Re-hashes a file.
pub fn hash_file(path: &Path, alg: Algorithm) -> io::Result<Digest> {
    let mut w = HashingWriter::new(io::sink(), alg);
    io::copy(&mut File::open(path)?, &mut w)?;
    Ok(w.finish().1)
}

/// A blob being written. Dropping it without [`BlobWriter::commit`] removes
/// the temp file; the blob never becomes visible.
pub struct BlobWriter {
    inner: Option<HashingWriter<BufWriter<File>>>,
    tmp: PathBuf,
    blobs: Blobs,
    expected: Option<Digest>,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.as_ref().map_or(0, HashingWriter::written)
    }

    /// Flushes, fsyncs, verifies and renames the blob into place. Returns its
    /// digest and size. If the blob already existed the new copy is dropped.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        let inner = self.inner.take().expect("commit once");
        let (buf, digest, size) = inner.finish();
        let file = buf
            .into_inner()
            .map_err(|e| StoreError::io(&self.tmp)(e.into_error()))?;
        if let Some(expected) = &self.expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let dest = self.blobs.path(&digest);
        if dest.is_file() {
            return Ok((digest, size));
        }
        file.sync_all().map_err(StoreError::io(&self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &dest).map_err(StoreError::io(&dest))?;
        if let Some(dir) = dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::io(dir))?;
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.as_mut().expect("not committed").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().expect("not committed").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful rename the temp path no longer exists.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> (tempfile::TempDir, Blobs) {
        let t = tempfile::tempdir().unwrap();
        let b = Blobs::new(t.path());
        b.create_dirs().unwrap();
        (t, b)
    }

    #[test]
    fn put_read_and_dedupe() {
        let (_t, b) = blobs();
        let d = b.put(b"hello").unwrap();
        assert_eq!(d, Digest::sha256(b"hello"));
        assert_eq!(b.read(&d).unwrap(), b"hello");
        assert_eq!(b.put(b"hello").unwrap(), d);
        assert_eq!(b.list().unwrap().0, vec![d]);
        assert_eq!(fs::read_dir(b.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn expected_digest_is_enforced_and_nothing_is_left() {
        let (_t, b) = blobs();
        let mut w = b.writer(Some(Digest::sha256(b"other"))).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
        assert!(b.list().unwrap().0.is_empty());
        assert_eq!(fs::read_dir(b.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn corrupt_blob_is_detected_on_read() {
        let (_t, b) = blobs();
        let d = b.put(b"hello").unwrap();
        fs::write(b.path(&d), b"jello").unwrap();
        match b.read(&d) {
            Err(StoreError::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, d);
                assert_eq!(actual, Digest::sha256(b"jello"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(b.read(&Digest::sha256(b"x")), Err(StoreError::BlobMissing(_))));
    }
}
