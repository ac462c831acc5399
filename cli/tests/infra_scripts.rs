//! The local bootstrap scripts under `infra/` use the `baton` on the PATH
//! when there is one, rather than building the workspace with `cargo run`.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::repo_file;

/// A static file server on loopback whose root holds `moto-api/` and
/// `_localstack/health`, so each script finds its emulator "up".
struct FakeEmulator {
    child: Child,
    url: String,
}

impl Drop for FakeEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fake_emulator(root: &Path) -> FakeEmulator {
    std::fs::create_dir_all(root.join("moto-api")).unwrap();
    std::fs::create_dir_all(root.join("_localstack")).unwrap();
    std::fs::write(root.join("_localstack/health"), "{}").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 serves files");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no file server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    FakeEmulator { child, url }
}

#[test]
fn bootstrap_scripts_run_the_installed_baton() {
    let dir = tempfile::tempdir().unwrap();
    let emulator = fake_emulator(&dir.path().join("www"));
    // A `baton` that records how it was called; `cargo` fails the test if reached.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.path().join("calls");
    for (name, body) in [
        ("baton", format!("echo \"$@\" >> '{}'", calls.display())),
        ("cargo", "echo 'cargo was run' >&2; exit 97".to_string()),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let port = emulator.url.rsplit(':').next().unwrap().to_string();
    for (script, arg) in [
        ("infra/bootstrap-moto.sh", port.as_str()),
        ("infra/bootstrap-localstack.sh", emulator.url.as_str()),
    ] {
        let _ = std::fs::remove_file(&calls);
        let out = Command::new("bash")
            .arg(repo_file(script))
            .arg(arg)
            .env("PATH", &path)
            .output()
            .expect("bash runs the script");
        assert!(
            out.status.success(),
            "{script} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let called = std::fs::read_to_string(&calls).unwrap_or_default();
        assert_eq!(
            called.trim(),
            format!("bootstrap --endpoint {}", emulator.url),
            "{script} did not run the installed baton"
        );
    }
}
