//! Live forwarding to a SIEM (`FORTIFILE_AUDIT_SYSLOG`): every sealed row, as
//! RFC 5424 syslog with the row as JSON in the message and its tenant,
//! sequence and hash as structured data, over TCP or TLS (octet-counted
//! framing, RFC 6587 / RFC 5425) or UDP (one datagram each).
//!
//! Delivery is at least once and in order per tenant. Each tenant's cursor
//! (`audit_chain.forwarded_seq`) is the last sequence the receiver is known to
//! have taken: rows are sent after it, and it moves only once the connection
//! they went out on has stayed up for [`CONFIRM_AFTER`] since (a receiver that
//! stops closes or resets the connection, and what it may not have read is
//! sent again from the cursor on the next connection). While the receiver is
//! down the server serves on and retries with backoff; a restart resumes from
//! the cursor. One instance forwards at a time: it holds a PostgreSQL advisory
//! lock on a connection of its own for as long as it runs.
//!
//! UDP has no connection to watch: a datagram counts as taken once sent.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::Instant,
};
use uuid::Uuid;

use super::verify::Link;
use crate::{
    config::{SyslogTarget, SyslogTransport},
    db::Database,
    link_select,
};

/// How long a connection must stay up after rows went out on it before the
/// cursor moves past them.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);
/// Rows sent per tenant per round.
const BATCH: i64 = 500;
const TICK: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The advisory lock that makes one instance the forwarder.
const LOCK: (i32, i32) = (7261, 17);

/// The RFC 5424 line for one sealed row.
pub fn message(host: &str, tenant: Uuid, link: &Link, row: &super::chain::Row) -> String {
    let severity = if row.result == "fail" { 4 } else { 6 };
    // facility 13: log audit
    let pri = 13 * 8 + severity;
    let time = row
        .created_at
        .to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "-".into());
    let msgid: String = row.action.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
    let body = json!({
        "id": row.id,
        "time": time,
        "tenantId": row.tenant_id,
        "userId": row.user_id,
        "action": row.action,
        "targetType": row.target_type,
        "targetId": row.target_id,
        "ip": row.ip.map(|ip| ip.addr().to_string()),
        "userAgent": row.user_agent,
        "result": row.result,
        "details": row.details,
        "classificationRank": row.classification_rank,
        "seq": link.seq,
        "hash": hex::encode(&link.hash),
    });
    format!(
        "<{pri}>1 {time} {host} fortifile {} {msgid} [fortifile@32473 tenant=\"{tenant}\" seq=\"{}\" hash=\"{}\"] {}",
        std::process::id(),
        link.seq,
        hex::encode(&link.hash),
        Value::to_string(&body)
    )
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

enum Conn {
    Stream(Box<dyn Stream>),
    Udp(UdpSocket),
}

/// Batches of one tenant sent on the current connection and not yet
/// confirmed: the last sequence of each, and when it went out.
type Pending = std::collections::VecDeque<(i64, Instant)>;

pub struct Forwarder {
    db: Database,
    target: SyslogTarget,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    host: String,
    conn: Option<Conn>,
    /// Per tenant: sent on this connection, up to here.
    sent: HashMap<Uuid, i64>,
    pending: HashMap<Uuid, Pending>,
    backoff: Duration,
    next_try: Instant,
}

impl Forwarder {
    pub fn new(db: Database, target: SyslogTarget, ca_file: Option<&std::path::Path>) -> anyhow::Result<Forwarder> {
        let tls = match target.transport {
            SyslogTransport::Tls => Some(Arc::new(tls_config(ca_file)?)),
            _ => None,
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().chars().filter(|c| c.is_ascii_graphic()).take(255).collect::<String>())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "-".into());
        Ok(Forwarder {
            db,
            target,
            tls,
            host,
            conn: None,
            sent: HashMap::new(),
            pending: HashMap::new(),
            backoff: Duration::from_millis(250),
            next_try: Instant::now(),
        })
    }

    /// Forwards until the task is dropped, while holding the forwarding lock.
    pub async fn run(mut self) {
        loop {
            let mut lock = match self.db.hold_advisory_lock(LOCK).await {
                Ok(Some(conn)) => conn,
                Ok(None) => {
                    // Another instance forwards (and reports the backlog).
                    crate::telemetry::syslog_backlog(0);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "audit forwarding: cannot take the forwarding lock");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            tracing::info!(target = %self.label(), "forwarding the audit log");
            for round in 0u64.. {
                // The lock lives as long as its connection: a database restart
                // ends it, and another instance may have taken it since.
                if round % 25 == 0 {
                    if sqlx::Connection::ping(&mut lock).await.is_err() {
                        tracing::warn!("audit forwarding: lost the forwarding lock; taking it again");
                        self.disconnect();
                        break;
                    }
                    // Whether or not the receiver is reachable: an outage is
                    // when the backlog matters.
                    if let Ok(rows) = self.backlog().await {
                        crate::telemetry::syslog_backlog(rows);
                    }
                }
                if let Err(e) = self.round().await {
                    tracing::warn!(error = format!("{e:#}"), target = %self.label(), "audit forwarding interrupted");
                    self.disconnect();
                }
                tokio::time::sleep(TICK).await;
            }
        }
    }

    /// Sealed rows the receiver has not confirmed, in every tenant.
    async fn backlog(&self) -> Result<i64, sqlx::Error> {
        let mut rows = 0;
        for tenant in self.db.tenant_ids().await? {
            let mut tx = self.db.tenant_tx(tenant, None).await?;
            let head = super::chain::head(&mut tx).await?;
            tx.commit().await?;
            rows += head.seq - head.forwarded_seq.max(head.anchor_seq);
        }
        Ok(rows)
    }

    fn label(&self) -> String {
        format!("{:?}://{}:{}", self.target.transport, self.target.host, self.target.port).to_lowercase()
    }

    fn disconnect(&mut self) {
        self.conn = None;
        self.sent.clear();
        self.pending.clear();
        self.next_try = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// One round: confirm what a live connection carried, connect if need be,
    /// and send every tenant's next rows.
    pub async fn round(&mut self) -> anyhow::Result<()> {
        if let Some(Conn::Stream(io)) = &mut self.conn
            && !alive(io)
        {
            anyhow::bail!("the receiver closed the connection");
        }
        self.confirm(false).await?;
        if self.conn.is_none() {
            if Instant::now() < self.next_try {
                return Ok(());
            }
            self.conn = Some(self.connect().await?);
        }
        for tenant in self.db.tenant_ids().await? {
            self.send_tenant(tenant).await?;
        }
        Ok(())
    }

    /// Moves the cursors of rows sent long enough ago on a connection still up
    /// (`all`: every sent row, for UDP).
    async fn confirm(&mut self, all: bool) -> anyhow::Result<()> {
        let mut due = Vec::new();
        for (tenant, batches) in &mut self.pending {
            let mut upto = None;
            while let Some(&(last, at)) = batches.front() {
                if !all && at.elapsed() < CONFIRM_AFTER {
                    break;
                }
                upto = Some(last);
                batches.pop_front();
            }
            if let Some(upto) = upto {
                due.push((*tenant, upto));
            }
        }
        for (tenant, upto) in due {
            let mut tx = self.db.tenant_tx(tenant, None).await?;
            sqlx::query("UPDATE audit_chain SET forwarded_seq = GREATEST(forwarded_seq, $2) WHERE tenant_id = $1")
                .bind(tenant)
                .bind(upto)
                .execute(tx.conn())
                .await?;
            tx.commit().await?;
            // The receiver has been taking rows: back off from scratch next time.
            self.backoff = Duration::from_millis(250);
        }
        Ok(())
    }

    async fn send_tenant(&mut self, tenant: Uuid) -> anyhow::Result<()> {
        let mut tx = self.db.tenant_tx(tenant, None).await?;
        let head = super::chain::head(&mut tx).await?;
        let after = match self.sent.get(&tenant) {
            Some(sent) => *sent,
            None => head.forwarded_seq.max(head.anchor_seq),
        };
        if after >= head.seq {
            tx.commit().await?;
            return Ok(());
        }
        let upto = head.seq.min(after + BATCH);
        let links: Vec<Link> =
            sqlx::query_as(link_select!()).bind(tenant).bind(after).bind(upto).fetch_all(tx.conn()).await?;
        tx.commit().await?;
        let mut last = after;
        let mut frames = Vec::new();
        for link in &links {
            let Some(row) = &link.row else {
                tracing::error!(%tenant, seq = link.seq, "audit row missing from the log: not forwarded");
                last = link.seq;
                continue;
            };
            let line = message(&self.host, tenant, link, row);
            frames.push(line);
            last = link.seq;
        }
        let Some(conn) = &mut self.conn else { return Ok(()) };
        match conn {
            Conn::Stream(io) => {
                let mut buf = Vec::new();
                for line in &frames {
                    buf.extend_from_slice(format!("{} ", line.len()).as_bytes());
                    buf.extend_from_slice(line.as_bytes());
                }
                io.write_all(&buf).await?;
                io.flush().await?;
            }
            Conn::Udp(socket) => {
                for line in &frames {
                    // A datagram holds at most 65,507 bytes: a longer row is cut.
                    let mut end = line.len().min(65_000);
                    while !line.is_char_boundary(end) {
                        end -= 1;
                    }
                    socket.send(&line.as_bytes()[..end]).await?;
                }
            }
        }
        self.sent.insert(tenant, last);
        self.pending.entry(tenant).or_default().push_back((last, Instant::now()));
        if matches!(self.conn, Some(Conn::Udp(_))) {
            self.confirm(true).await?;
        }
        Ok(())
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let addr = (self.target.host.as_str(), self.target.port);
        let timeout = Duration::from_secs(5);
        match self.target.transport {
            SyslogTransport::Udp => {
                let bind = if self.target.host.contains(':') { "[::]:0" } else { "0.0.0.0:0" };
                let socket = UdpSocket::bind(bind).await?;
                socket.connect(addr).await?;
                Ok(Conn::Udp(socket))
            }
            SyslogTransport::Tcp | SyslogTransport::Tls => {
                let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr)).await??;
                tcp.set_nodelay(true)?;
                let io: Box<dyn Stream> = match &self.tls {
                    None => Box::new(tcp),
                    Some(config) => {
                        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.target.host.clone())?;
                        let connector = tokio_rustls::TlsConnector::from(config.clone());
                        Box::new(tokio::time::timeout(timeout, connector.connect(name, tcp)).await??)
                    }
                };
                Ok(Conn::Stream(io))
            }
        }
    }
}

/// Whether the peer has not closed or reset the connection: a read that
/// would wait means it is up with nothing to say. Reading through the stream
/// (not the socket beneath) also takes in what TLS sends unasked (session
/// tickets), which would otherwise look like data forever.
fn alive(io: &mut Box<dyn Stream>) -> bool {
    use futures::FutureExt;
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match io.read(&mut buf).now_or_never() {
            None => return true,
            Some(Ok(0)) | Some(Err(_)) => return false,
            Some(Ok(_)) => continue,
        }
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> anyhow::Result<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("FORTIFILE_AUDIT_SYSLOG_CA: {}: {e}", path.display()))?
            {
                roots.add(cert.map_err(|e| anyhow::anyhow!("FORTIFILE_AUDIT_SYSLOG_CA: {e}"))?)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                roots.add(cert).ok();
            }
        }
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate authorities to check the syslog receiver with");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
