//! Live forwarding to a SIEM (issue 16) against a real receiver: Debian's
//! rsyslog on a loopback port, writing what it receives to a file. The
//! receiver is stopped while rows are written and started again, and the
//! forwarder itself is restarted mid-stream: every row arrives, in order, once
//! or more, none missing.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{TestApp, scratch_dir, seal_everything};
use fortifile::{
    audit::{self, Action, Entry, Outcome, Source, chain, forward::Forwarder},
    config::SyslogTarget,
    db::Database,
};
use serde_json::{Value, json};

struct Rsyslog {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Rsyslog {
    fn new(dir: &Path) -> Rsyslog {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = format!(
            "global(workDirectory=\"{dir}\")\n\
             module(load=\"imtcp\")\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
             template(name=\"sd\" type=\"string\" string=\"%msgid% %structured-data% %msg%\\n\")\n\
             action(type=\"omfile\" file=\"{dir}/received.log\" template=\"sd\")\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        Rsyslog { dir: dir.to_path_buf(), port, child: None }
    }

    fn start(&mut self) {
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (Debian's rsyslog; scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("rsyslogd did not listen on {}", self.port);
    }

    /// Stops it as an administrator would (SIGTERM), and waits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
            child.wait().unwrap();
        }
    }

    /// The sequence numbers received, in the order they arrived.
    fn received(&self) -> Vec<i64> {
        let text = std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let at = line.find("seq=\"")? + 5;
                line[at..].split('"').next()?.parse().ok()
            })
            .collect()
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default().lines().map(String::from).collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

async fn write(db: &Database, tenant: uuid::Uuid, n: usize, from: usize) {
    for i in from..from + n {
        let entry = Entry::new(Action::FileDownload, Outcome::Success).details(json!({ "n": i }));
        audit::record_alone(db, tenant, None, &Source::default(), entry).await.unwrap();
    }
}

/// Every number 1..=head arrived, and each first arrival came after the one before.
fn complete_and_in_order(seqs: &[i64], head: i64) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut first = Vec::new();
    for &s in seqs {
        if seen.insert(s) {
            first.push(s);
        }
    }
    if first.windows(2).any(|w| w[0] > w[1]) {
        return Err(format!("rows arrived out of order: {first:?}"));
    }
    let missing: Vec<i64> = (1..=head).filter(|s| !seen.contains(s)).collect();
    if missing.is_empty() { Ok(()) } else { Err(format!("missing {missing:?}")) }
}

#[tokio::test]
async fn every_row_reaches_rsyslog_in_order_across_its_restart_and_a_restart_of_the_forwarder() {
    let app = TestApp::spawn().await;
    let dir = scratch_dir();
    let mut rsyslog = Rsyslog::new(&dir);
    rsyslog.start();
    let t = app.default_tenant;
    let target = SyslogTarget::parse(&format!("tcp://127.0.0.1:{}", rsyslog.port)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let sealer = {
        let (db, stop) = (app.db.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                chain::seal_all(&db).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let forwarder = tokio::spawn(Forwarder::new(app.db.clone(), target.clone(), None).unwrap().run());

    write(&app.db, t, 40, 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The receiver goes away while rows keep coming.
    rsyslog.stop();
    write(&app.db, t, 60, 40).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    rsyslog.start();
    write(&app.db, t, 30, 100).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // FortiFile restarts: a new forwarder resumes from the stored cursor.
    forwarder.abort();
    let _ = forwarder.await;
    write(&app.db, t, 30, 130).await;
    let forwarder = tokio::spawn(Forwarder::new(app.db.clone(), target, None).unwrap().run());
    write(&app.db, t, 20, 160).await;

    let mut last = Err(String::new());
    for _ in 0..400 {
        let mut tx = app.db.tenant_tx(t, None).await.unwrap();
        let head = chain::head(&mut tx).await.unwrap();
        let (unsealed, _) = chain::unsealed(&mut tx).await.unwrap();
        tx.commit().await.unwrap();
        last = complete_and_in_order(&rsyslog.received(), head.seq);
        if unsealed == 0 && last.is_ok() && head.forwarded_seq == head.seq {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    forwarder.abort();
    sealer.await.unwrap();
    last.unwrap_or_else(|why| panic!("{why}"));
    assert!(rsyslog.received().len() >= 180);

    // What a SIEM gets: RFC 5424 with the tenant, sequence and hash as
    // structured data and the row as JSON.
    let line = rsyslog.lines().into_iter().find(|l| l.starts_with("file.download ")).unwrap();
    assert!(line.contains(&format!("[fortifile@32473 tenant=\"{t}\" seq=\"")), "{line}");
    let json: Value = serde_json::from_str(&line[line.find("] ").unwrap() + 2..]).unwrap();
    assert_eq!(json["action"], "file.download");
    assert_eq!(json["tenantId"], t.to_string());
    assert_eq!(json["hash"].as_str().unwrap().len(), 64);
}

#[test]
fn the_order_check_itself_refuses_a_gap_and_a_reordering() {
    assert!(complete_and_in_order(&[1, 2, 3, 2, 3, 4], 4).is_ok());
    assert!(complete_and_in_order(&[1, 3, 4], 4).is_err());
    assert!(complete_and_in_order(&[1, 3, 2, 4], 4).is_err());
}

/// A CA and a certificate for `localhost` it signed, made with openssl.
fn certificates(dir: &Path) {
    let sh = |args: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(ok.unwrap().success(), "openssl: {args}");
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj /CN=fortifile-test-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign");
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf",
    );
}

/// The sequence numbers in octet-counted syslog frames ("LEN SP MSG") read
/// from `io` until it ends.
async fn frames(mut io: impl tokio::io::AsyncRead + Unpin, sink: Arc<std::sync::Mutex<Vec<i64>>>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = io.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(space) = buf.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..space]).unwrap().parse().unwrap();
            if buf.len() < space + 1 + len {
                break;
            }
            let msg = String::from_utf8(buf[space + 1..space + 1 + len].to_vec()).unwrap();
            buf.drain(..space + 1 + len);
            let at = msg.find("seq=\"").unwrap() + 5;
            sink.lock().unwrap().push(msg[at..].split('"').next().unwrap().parse().unwrap());
        }
    }
}

/// A syslog receiver on loopback, over TLS with `dir`'s certificate or plain
/// TCP, collecting the sequence numbers it gets.
async fn receiver(tls_dir: Option<&Path>) -> (u16, Arc<std::sync::Mutex<Vec<i64>>>) {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    let acceptor = tls_dir.map(|dir| {
        let certs: Vec<CertificateDer> =
            CertificateDer::pem_file_iter(dir.join("server.pem")).unwrap().map(|c| c.unwrap()).collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let sink = sink.clone();
            match &acceptor {
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(tcp).await else { continue };
                    tokio::spawn(frames(tls, sink));
                }
                None => {
                    tokio::spawn(frames(tcp, sink));
                }
            }
        }
    });
    (port, got)
}

async fn head_seq(app: &TestApp) -> i64 {
    let mut tx = app.db.tenant_tx(app.default_tenant, None).await.unwrap();
    let head = chain::head(&mut tx).await.unwrap().seq;
    tx.commit().await.unwrap();
    head
}

#[tokio::test]
async fn two_instances_forward_each_row_once_because_one_holds_the_forwarding_lock() {
    let app = TestApp::spawn().await;
    let (port, got) = receiver(None).await;
    let target = SyslogTarget::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
    let one = tokio::spawn(Forwarder::new(app.db.clone(), target.clone(), None).unwrap().run());
    let two = tokio::spawn(Forwarder::new(app.db.clone(), target, None).unwrap().run());
    write(&app.db, app.default_tenant, 30, 0).await;
    seal_everything(&app.db, app.default_tenant).await;
    let head = head_seq(&app).await;
    for _ in 0..100 {
        if got.lock().unwrap().len() as i64 >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    one.abort();
    two.abort();
    let seqs = got.lock().unwrap().clone();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "each row once, in order");
}

#[tokio::test]
async fn over_tls_rows_reach_a_receiver_whose_certificate_the_configured_authority_signed_and_no_other() {
    let app = TestApp::spawn().await;
    let dir = scratch_dir();
    certificates(&dir);
    let (port, got) = receiver(Some(&dir)).await;
    write(&app.db, app.default_tenant, 15, 0).await;
    seal_everything(&app.db, app.default_tenant).await;
    let target = SyslogTarget::parse(&format!("tls://localhost:{port}")).unwrap();
    // Without the authority (the system's roots only) the handshake fails: nothing is sent.
    if let Ok(mut untrusting) = Forwarder::new(app.db.clone(), target.clone(), None) {
        assert!(untrusting.round().await.is_err(), "a certificate no trusted authority signed is refused");
    }
    assert!(got.lock().unwrap().is_empty());
    let forwarder = tokio::spawn(Forwarder::new(app.db.clone(), target, Some(&dir.join("ca.pem"))).unwrap().run());
    let head = head_seq(&app).await;
    let mut last = Err(String::new());
    for _ in 0..100 {
        last = complete_and_in_order(&got.lock().unwrap(), head);
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    forwarder.abort();
    last.unwrap_or_else(|why| panic!("{why}"));
}
