//! The processes a benchmark run measures: the simulator and the relay (both the
//! `bedrock-relay` binary), and, when installed, nginx as a plain reverse proxy and LiteLLM's
//! Bedrock pass-through. Each is a child process on a loopback port so that its CPU time
//! (`/proc/<pid>/stat` utime + stime) and resident memory (`/proc/<pid>/status` VmRSS, summed
//! over the process tree) can be read from outside.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Failures while starting or observing a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not accept connections on {addr} within {secs}s")]
    NotReady {
        what: String,
        addr: SocketAddr,
        secs: u64,
    },
    #[error("{what} exited early ({status})")]
    Exited { what: String, status: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A child process killed when dropped.
pub struct Proc {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

impl Proc {
    /// Spawn `cmd` and wait until `addr` accepts TCP connections.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        addr: SocketAddr,
        wait: Duration,
    ) -> Result<Proc, ProcError> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        if std::env::var_os("BENCH_CHILD_LOGS").is_none() {
            cmd.stderr(Stdio::null());
        }
        let child = cmd.spawn().map_err(|source| ProcError::Spawn {
            what: name.to_owned(),
            source,
        })?;
        let mut p = Proc {
            name: name.to_owned(),
            addr,
            child,
        };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(status) = p.child.try_wait()? {
                return Err(ProcError::Exited {
                    what: name.to_owned(),
                    status: status.to_string(),
                });
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(p);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ProcError::NotReady {
            what: name.to_owned(),
            addr,
            secs: wait.as_secs(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) of the process and all its descendants still running.
    pub fn cpu(&self) -> Duration {
        tree(self.pid()).iter().map(|&p| cpu_of(p)).sum()
    }

    /// Resident memory in bytes of the process and all its descendants.
    pub fn rss(&self) -> u64 {
        tree(self.pid()).iter().map(|&p| rss_of(p)).sum()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        for pid in tree(self.child.id()).into_iter().skip(1) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr")
}

/// `pid` and every descendant (via /proc/<pid>/task/*/children).
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

/// utime + stime of one process from /proc/<pid>/stat (clock ticks of 1/100 s on Linux).
fn cpu_of(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// VmRSS of one process in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Start `bedrock-relay sim` with the given extra flags.
pub fn start_sim(bin: &Path, extra: &[&str]) -> Result<Proc, ProcError> {
    let addr = free_addr();
    let mut cmd = Command::new(bin);
    cmd.args(["sim", "--listen", &addr.to_string(), "--log-capacity", "64"])
        .args(extra)
        .env_remove("RUST_LOG");
    Proc::spawn("simulator", cmd, addr, Duration::from_secs(20))
}

/// Start `bedrock-relay serve` in front of `upstream` with static credentials.
pub fn start_relay(bin: &Path, upstream: SocketAddr) -> Result<Proc, ProcError> {
    start_relay_env(bin, upstream, &[])
}

/// [`start_relay`] with extra `BEDROCK_RELAY_*` settings in its environment.
pub fn start_relay_env(
    bin: &Path,
    upstream: SocketAddr,
    env: &[(&str, &str)],
) -> Result<Proc, ProcError> {
    let (addr, admin) = (free_addr(), free_addr());
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &addr.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--upstream", &format!("http://{upstream}")])
        .args(["--log-level", "warn"])
        .env_remove("RUST_LOG")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCHEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "bench-secret-key")
        .env("AWS_REGION", "us-east-1")
        .env("BEDROCK_RELAY_BACKOFF_BASE", "1ms")
        .env("BEDROCK_RELAY_BACKOFF_MAX", "1ms")
        .envs(env.iter().copied());
    Proc::spawn("relay", cmd, addr, Duration::from_secs(20))
}

/// nginx on PATH or in /usr/sbin, if installed.
pub fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// Start nginx as a plain keep-alive reverse proxy to `upstream` (response buffering off so
/// streams pass through frame by frame). `dir` holds its config, pid file and temp paths.
pub fn start_nginx(bin: &Path, upstream: SocketAddr, dir: &Path) -> Result<Proc, ProcError> {
    let addr = free_addr();
    std::fs::create_dir_all(dir)?;
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\nworker_rlimit_nofile 65536;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 30000; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         upstream sim {{ server {upstream}; keepalive 256; }}\n\
         server {{\n  listen {addr};\n  keepalive_requests 1000000;\n\
         location / {{ proxy_pass http://sim; proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\"; proxy_buffering off; }}\n }}\n}}\n"
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&file).arg("-p").arg(dir);
    Proc::spawn("nginx", cmd, addr, Duration::from_secs(20))
}

/// Start LiteLLM's proxy (its `litellm` executable) with the Bedrock pass-through pointed
/// at `upstream`. Returns the process and the master key requests must carry.
pub fn start_litellm(exe: &Path, upstream: SocketAddr, dir: &Path) -> Result<Proc, ProcError> {
    let addr = free_addr();
    std::fs::create_dir_all(dir)?;
    let config = dir.join("litellm.yaml");
    let model = super::load::MODEL;
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: {model}\n    litellm_params:\n      \
             model: bedrock/{model}\n      aws_bedrock_runtime_endpoint: http://{upstream}\n      \
             aws_region_name: us-east-1\ngeneral_settings:\n  master_key: sk-bench\n"
        ),
    )?;
    let mut cmd = Command::new(exe);
    cmd.args(["--config", &config.display().to_string()])
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--num_workers", "1"])
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCHEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "bench-secret-key")
        .env("AWS_REGION_NAME", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_BEDROCK_RUNTIME_ENDPOINT", format!("http://{upstream}"))
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("NO_DOCS", "True");
    Proc::spawn("litellm", cmd, addr, Duration::from_secs(120))
}
