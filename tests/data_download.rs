//! The downloader against a tiny local HTTP server: a synthetic archive with the
//! official layout is installed and verified; a wrong md5, a body cut short and
//! an HTTP error all fail with the URL and leave nothing behind.

use ard_pipeline::config::{DataChecksums, DataConfig};
use ard_pipeline::data::checksum::md5_hex;
use ard_pipeline::data::cifar::{RECORDS_PER_FILE, RECORD_BYTES, TEST_FILES, TRAIN_FILES};
use ard_pipeline::data::{download_cifar10_from, ensure_cifar10, load_split, SplitKind, Stamp};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The synthetic batch file `file` (0..6): valid labels, patterned pixels.
fn batch_bytes(file: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; RECORDS_PER_FILE * RECORD_BYTES];
    for (i, rec) in bytes.chunks_exact_mut(RECORD_BYTES).enumerate() {
        rec[0] = ((i + file) % 10) as u8;
        for (j, p) in rec[1..].iter_mut().enumerate() {
            *p = (j + 3 * i + 7 * file) as u8;
        }
    }
    bytes
}

/// A tar.gz with the official layout (plus members the downloader must skip),
/// and its md5. Built once per test binary.
fn archive() -> &'static (Vec<u8>, String) {
    static ARCHIVE: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, data).unwrap();
        };
        add("cifar-10-batches-bin/readme.html", b"<html></html>");
        add(
            "cifar-10-batches-bin/batches.meta.txt",
            b"airplane\nautomobile\n",
        );
        for (f, name) in TRAIN_FILES.iter().chain(TEST_FILES.iter()).enumerate() {
            add(&format!("cifar-10-batches-bin/{name}"), &batch_bytes(f));
        }
        add("elsewhere/test_batch.bin", b"ignored");
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        let md5 = md5_hex(&bytes);
        (bytes, md5)
    })
}

/// What the server answers.
#[derive(Clone, Copy)]
enum Reply {
    /// 200 with the whole body.
    Full,
    /// 200 announcing the whole body, then the first `n` bytes and a close.
    CutAfter(usize),
    /// 404 with an empty body.
    NotFound,
}

/// A one-request HTTP server on 127.0.0.1; `finish` returns how many it served.
struct Server {
    addr: SocketAddr,
    handle: JoinHandle<usize>,
}

impl Server {
    fn start(body: &'static [u8], reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            // Serve exactly one request, or give up at the deadline.
            while Instant::now() < deadline {
                let mut stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).unwrap();
                    assert!(n > 0, "client closed before sending a request");
                    req.extend_from_slice(&buf[..n]);
                }
                assert!(
                    req.starts_with(b"GET /cifar-10-binary.tar.gz "),
                    "{}",
                    String::from_utf8_lossy(&req)
                );
                let (status, sent) = match reply {
                    Reply::Full => ("200 OK", body),
                    Reply::CutAfter(n) => ("200 OK", &body[..n]),
                    Reply::NotFound => ("404 Not Found", &body[..0]),
                };
                let len = if matches!(reply, Reply::NotFound) {
                    0
                } else {
                    body.len()
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/x-gzip\r\nContent-Length: {len}\r\n\
                     Connection: close\r\n\r\n"
                );
                // The client may hang up early on errors; that is fine.
                let _ = stream
                    .write_all(head.as_bytes())
                    .and_then(|_| stream.write_all(sent));
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return 1;
            }
            0
        });
        Server { addr, handle }
    }

    fn url(&self) -> String {
        format!("http://{}/cifar-10-binary.tar.gz", self.addr)
    }

    fn finish(self) -> usize {
        self.handle.join().unwrap()
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn downloads_verifies_and_installs() {
    let (bytes, md5) = archive();
    let server = Server::start(bytes, Reply::Full);
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cifar");
    std::fs::create_dir(&root).unwrap(); // an empty folder is replaced
    download_cifar10_from(&root, &url, md5).unwrap();
    assert_eq!(server.finish(), 1);

    // Only the dataset folder is left next to it; it holds what we asked for.
    assert_eq!(entries(tmp.path()), ["cifar"]);
    let mut expected: Vec<String> = TRAIN_FILES
        .iter()
        .chain(TEST_FILES.iter())
        .map(|s| s.to_string())
        .collect();
    expected.extend([".ard-verified.json".into(), "batches.meta.txt".into()]);
    expected.sort();
    assert_eq!(entries(&root), expected);

    let stamp = Stamp::read(&root).unwrap().unwrap();
    assert_eq!(&stamp.archive_md5, md5);
    assert_eq!(stamp.source_url, url);
    assert_eq!(stamp.files["test_batch.bin"], md5_hex(&batch_bytes(5)));
    assert_eq!(stamp.files.len(), 7);

    let test = load_split(&root, SplitKind::Test, DataChecksums::Official).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.label(0), 5);
    assert_eq!(
        test.image(2),
        &batch_bytes(5)[2 * RECORD_BYTES + 1..3 * RECORD_BYTES]
    );
    let train = load_split(&root, SplitKind::Train, DataChecksums::Any).unwrap();
    assert_eq!(train.len(), 50_000);
    // Synthetic files are not the offline copy.
    assert!(load_split(&root, SplitKind::Test, DataChecksums::OfflineCopy).is_err());

    // Present files: nothing to do, even with download on (no server running).
    let cfg = DataConfig {
        root: root.clone(),
        download: true,
        ..DataConfig::default()
    };
    ensure_cifar10(&cfg).unwrap();

    // A file changed after download no longer counts as official.
    let file = root.join("test_batch.bin");
    let mut raw = std::fs::read(&file).unwrap();
    raw[1] ^= 1;
    std::fs::write(&file, &raw).unwrap();
    let e = load_split(&root, SplitKind::Test, DataChecksums::Official)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin")
            && e.contains("official")
            && e.contains(&stamp.files["test_batch.bin"]),
        "{e}"
    );
}

#[test]
fn wrong_md5_leaves_nothing() {
    let (bytes, _) = archive();
    let server = Server::start(bytes, Reply::Full);
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data").join("cifar");
    let wrong = "0123456789abcdef0123456789abcdef";
    let e = download_cifar10_from(&root, &url, wrong)
        .unwrap_err()
        .to_string();
    assert_eq!(server.finish(), 1);
    assert!(
        e.contains(&url) && e.contains(wrong) && e.contains("md5"),
        "{e}"
    );
    assert!(!root.exists());
    assert!(entries(&tmp.path().join("data")).is_empty());
}

#[test]
fn body_cut_short_leaves_nothing() {
    let (bytes, md5) = archive();
    let server = Server::start(bytes, Reply::CutAfter(bytes.len() / 2));
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cifar");
    let e = download_cifar10_from(&root, &url, md5)
        .unwrap_err()
        .to_string();
    assert_eq!(server.finish(), 1);
    assert!(e.contains(&url), "{e}");
    assert!(!root.exists());
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
}

#[test]
fn http_error_names_the_url() {
    let server = Server::start(b"", Reply::NotFound);
    let url = server.url();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cifar");
    let e = download_cifar10_from(&root, &url, ard_pipeline::data::ARCHIVE_MD5)
        .unwrap_err()
        .to_string();
    assert_eq!(server.finish(), 1);
    assert!(e.contains(&url) && e.contains("404"), "{e}");
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn offline_without_download_says_where_to_put_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = DataConfig {
        root: tmp.path().join("cifar"),
        download: false,
        ..DataConfig::default()
    };
    let e = ensure_cifar10(&cfg).unwrap_err().to_string();
    assert!(e.contains(&cfg.root.display().to_string()), "{e}");
    assert!(
        e.contains("test_batch.bin") && e.contains("data.download = true"),
        "{e}"
    );
}
