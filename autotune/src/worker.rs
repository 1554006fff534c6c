//! Measuring candidates in a child process, so that generated code that
//! crashes (a segfault, an illegal instruction) or hangs kills only the
//! worker: the candidate is recorded as failed and the next one gets a
//! fresh worker.
//!
//! The worker is any program that calls [`serve_stdio`] — the `carbide`
//! binary's hidden `tune-worker` subcommand, or the Python module — and
//! talks over its stdin/stdout. Each request is self-contained (a `.carbide`
//! artifact holding the one kernel, its f32 feeds and the timing settings),
//! so a restarted worker needs no state. Framing: one JSON header line, then
//! the raw payloads it announces (the artifact, then each f32 tensor as
//! little-endian bytes). The worker first writes [`HELLO`] so the client
//! knows it talks to a worker and can skip anything printed before it.

use crate::measure::{time_module, MeasureConfig};
use carbide_ir::ndarray::{ArrayD, IxDyn};
use carbide_ir::{Tensor, Value};
use carbide_runtime::Module;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The first line a worker writes: protocol name and version.
pub const HELLO: &str = "carbide-tune-worker 1";

/// How to start a worker process.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Extra environment variables for the worker.
    pub env: Vec<(String, String)>,
}

impl WorkerCommand {
    /// This executable with `args` (e.g. `carbide tune-worker`).
    pub fn current_exe(args: &[&str]) -> Result<WorkerCommand, String> {
        let program = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
        Ok(WorkerCommand {
            program,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TensorHeader {
    name: String,
    shape: Vec<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestHeader {
    artifact_len: usize,
    feeds: Vec<TensorHeader>,
    threads: usize,
    repeats: usize,
    min_repeat_ns: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResponseHeader {
    #[serde(default)]
    median_us: Option<f64>,
    #[serde(default)]
    outputs: Vec<TensorHeader>,
    #[serde(default)]
    error: Option<String>,
}

/// One measurement: the kernel's artifact, its feeds and how to time it.
pub struct Request<'a> {
    pub artifact: &'a [u8],
    pub feeds: &'a [(String, Value)],
    pub config: &'a MeasureConfig,
}

/// The median time in µs and the outputs, or why the candidate failed.
pub type Measured = Result<(f64, Vec<Value>), String>;

fn f32_data(v: &Value, name: &str) -> Result<(Vec<usize>, Vec<u8>), String> {
    match v.as_tensor() {
        Some(Tensor::F32(a)) => {
            let mut bytes = Vec::with_capacity(a.len() * 4);
            for x in a.iter() {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            Ok((a.shape().to_vec(), bytes))
        }
        _ => Err(format!(
            "'{name}' is not an f32 tensor; only f32 values cross to the worker"
        )),
    }
}

fn read_f32(r: &mut impl Read, shape: &[usize]) -> std::io::Result<Value> {
    let n: usize = shape.iter().product();
    let mut bytes = vec![0u8; n * 4];
    r.read_exact(&mut bytes)?;
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let a = ArrayD::from_shape_vec(IxDyn(shape), data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(Value::Tensor(Tensor::F32(a)))
}

fn read_header<T: for<'de> Deserialize<'de>>(r: &mut impl BufRead) -> std::io::Result<Option<T>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad header: {e}")))
}

fn write_line(w: &mut impl Write, header: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// The worker loop on this process's stdin/stdout; returns when stdin
/// closes. Measures each request as [`time_module`] does in-process.
pub fn serve_stdio() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    serve(&mut stdin.lock(), &mut stdout.lock())
}

/// The worker loop over any pair of streams (see [`serve_stdio`]).
pub fn serve(input: &mut impl BufRead, output: &mut impl Write) -> std::io::Result<()> {
    output.write_all(format!("{HELLO}\n").as_bytes())?;
    output.flush()?;
    while let Some(req) = read_header::<RequestHeader>(input)? {
        let mut artifact = vec![0u8; req.artifact_len];
        input.read_exact(&mut artifact)?;
        let mut feeds = Vec::with_capacity(req.feeds.len());
        for f in &req.feeds {
            feeds.push((f.name.clone(), read_f32(input, &f.shape)?));
        }
        let config = MeasureConfig {
            threads: req.threads,
            repeats: req.repeats,
            min_repeat: Duration::from_nanos(req.min_repeat_ns),
            ..MeasureConfig::default()
        };
        let result = Module::from_bytes(&artifact)
            .map_err(|e| format!("loading: {e}"))
            .and_then(|mut m| {
                m.set_threads(config.threads.max(1)).map_err(|e| e.to_string())?;
                time_module(&m, &feeds, &config)
            })
            .and_then(|(median_us, outputs)| {
                let data = outputs
                    .iter()
                    .enumerate()
                    .map(|(i, v)| f32_data(v, &format!("output {i}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((median_us, data))
            });
        match result {
            Ok((median_us, data)) => {
                let header = ResponseHeader {
                    median_us: Some(median_us),
                    outputs: data
                        .iter()
                        .enumerate()
                        .map(|(i, (shape, _))| TensorHeader {
                            name: format!("output {i}"),
                            shape: shape.clone(),
                        })
                        .collect(),
                    error: None,
                };
                write_line(output, &header)?;
                for (_, bytes) in &data {
                    output.write_all(bytes)?;
                }
            }
            Err(e) => write_line(
                output,
                &ResponseHeader {
                    median_us: None,
                    outputs: Vec::new(),
                    error: Some(e),
                },
            )?,
        }
        output.flush()?;
    }
    Ok(())
}

/// A running worker: its stdin, and the responses its reader thread parses.
struct Running {
    child: Child,
    stdin: ChildStdin,
    responses: mpsc::Receiver<std::io::Result<Measured>>,
}

/// The client side: starts a worker on first use and again after one died.
pub struct Worker {
    command: WorkerCommand,
    running: Option<Running>,
    /// Workers started so far (the first, and one after each crash or timeout).
    pub spawned: usize,
}

impl Worker {
    pub fn new(command: WorkerCommand) -> Worker {
        Worker {
            command,
            running: None,
            spawned: 0,
        }
    }

    fn spawn(&mut self) -> Result<&mut Running, String> {
        if self.running.is_none() {
            let what = || format!("the tuning worker {}", self.command.program.display());
            let mut child = Command::new(&self.command.program)
                .args(&self.command.args)
                .envs(self.command.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", what()))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} has no stdin/stdout pipes", what()));
            };
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("carbide-tune-worker-reader".into())
                .spawn(move || read_responses(stdout, tx))
                .map_err(|e| format!("spawning the reader thread: {e}"))?;
            self.spawned += 1;
            self.running = Some(Running {
                child,
                stdin,
                responses: rx,
            });
        }
        self.running.as_mut().ok_or_else(|| "no worker".to_string())
    }

    /// Kills the worker (if still alive) and says how it ended.
    fn reap(&mut self, kill: bool) -> String {
        let Some(mut r) = self.running.take() else {
            return "no worker".into();
        };
        drop(r.stdin);
        if kill {
            let _ = r.child.kill();
        }
        match r.child.wait() {
            Ok(status) => describe_exit(status),
            Err(e) => format!("unknown exit ({e})"),
        }
    }

    /// Measures one kernel artifact in the worker. A crash or a timeout
    /// kills only the worker; the next call starts a new one.
    pub fn measure(&mut self, req: &Request<'_>, timeout: Duration) -> Measured {
        let running = self.spawn()?;
        let sent = send(&mut running.stdin, req);
        if let Err(e) = sent {
            // A broken pipe: the worker died before reading the request.
            return Err(format!("the tuning worker is gone ({e}; {})", self.reap(true)));
        }
        let received = running.responses.recv_timeout(timeout);
        match received {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                let how = self.reap(true);
                Err(format!("the candidate crashed the measuring process ({how}; {e})"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let how = self.reap(true);
                Err(format!("the candidate crashed the measuring process ({how})"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.reap(true);
                Err(format!("timed out after {timeout:?}; the measuring process was killed"))
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing stdin ends the loop of a healthy worker; kill covers a hung one.
        self.reap(true);
    }
}

fn send(w: &mut ChildStdin, req: &Request<'_>) -> Result<(), String> {
    let mut feeds = Vec::with_capacity(req.feeds.len());
    let mut data = Vec::with_capacity(req.feeds.len());
    for (name, v) in req.feeds {
        let (shape, bytes) = f32_data(v, name)?;
        feeds.push(TensorHeader {
            name: name.clone(),
            shape,
        });
        data.push(bytes);
    }
    let header = RequestHeader {
        artifact_len: req.artifact.len(),
        feeds,
        threads: req.config.threads,
        repeats: req.config.repeats,
        min_repeat_ns: req.config.min_repeat.as_nanos() as u64,
    };
    let mut write = || -> std::io::Result<()> {
        write_line(w, &header)?;
        w.write_all(req.artifact)?;
        for d in &data {
            w.write_all(d)?;
        }
        w.flush()
    };
    write().map_err(|e| e.to_string())
}

/// The reader thread: waits for [`HELLO`], then parses responses until the
/// worker's stdout closes (it exited or crashed) or the client hangs up.
fn read_responses(stdout: std::process::ChildStdout, tx: mpsc::Sender<std::io::Result<Measured>>) {
    let mut r = BufReader::new(stdout);
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the worker closed its output");
    // A test harness re-executed as the worker may print before serving
    // (even on the same line: "test name ... " has no newline).
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => {
                let _ = tx.send(Err(eof()));
                return;
            }
            Ok(_) if line.trim_end().ends_with(HELLO) => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
    loop {
        let result = (|| -> std::io::Result<Measured> {
            let header: ResponseHeader = read_header(&mut r)?.ok_or_else(eof)?;
            if let Some(e) = header.error {
                return Ok(Err(e));
            }
            let median_us = header
                .median_us
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "response without a time"))?;
            let mut outputs = Vec::with_capacity(header.outputs.len());
            for o in &header.outputs {
                outputs.push(read_f32(&mut r, &o.shape)?);
            }
            Ok(Ok((median_us, outputs)))
        })();
        let stop = result.is_err();
        if tx.send(result).is_err() || stop {
            return;
        }
    }
}

#[cfg(unix)]
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) => {
            let name = match sig {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                _ => "",
            };
            format!("killed by signal {sig}{name}")
        }
        None => status.to_string(),
    }
}

#[cfg(not(unix))]
fn describe_exit(status: std::process::ExitStatus) -> String {
    status.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Bench;
    use crate::tuner::tests::{host_target, matmul_group, quick, test_worker};
    use carbide_backend_cpu::{lower, LoweredKernel};

    /// `k` with its entry point's body replaced by `body` (C statements).
    fn sabotaged(k: &LoweredKernel, body: &str) -> LoweredKernel {
        let mut bad = k.clone();
        let signature = format!("void {}(", k.call.entry);
        assert!(
            bad.source.contains(&signature),
            "the entry point is defined as '{signature}...'"
        );
        bad.source = bad
            .source
            .replace(&signature, &format!("static void {}_original(", k.call.entry));
        bad.source.push_str(&format!(
            "void {}(void *const *bufs, const int64_t *p, int64_t part, int64_t num_parts) {{\n\
             (void)bufs; (void)p; (void)part; (void)num_parts;\n{body}\n}}\n",
            k.call.entry
        ));
        bad
    }

    #[test]
    fn a_crashing_or_hanging_candidate_is_discarded_and_the_worker_restarts() {
        let Some(target) = host_target() else { return };
        let group = matmul_group(32, 64, 48);
        let good = lower(&group, &target, None).unwrap().unwrap();
        let segfault = sabotaged(&good, "*(volatile float *)0 = 1.0f;");
        let trap = sabotaged(&good, "__builtin_trap();");
        let hang = sabotaged(&good, "for (;;) { __asm__ volatile(\"\" ::: \"memory\"); }");
        let out = good
            .call
            .buffers
            .iter()
            .position(|b| matches!(b, carbide_ir::kernel::BufferArg::Output(0)))
            .unwrap();
        let wrong = sabotaged(&good, &format!("((float *)bufs[{out}])[0] = 12345.0f;"));
        let mut cfg = quick(1).measure;
        cfg.timeout = Duration::from_secs(5);
        let mut worker = Worker::new(test_worker());
        let mut bench = Bench::new(&group, &target, 7).unwrap();
        let results = bench.measure_lowered(
            &mut worker,
            vec![good.clone(), segfault, good.clone(), trap, hang, good.clone(), wrong],
            &cfg,
        );
        let err = |i: usize| results[i].clone().expect_err("a discarded candidate");
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(err(1).contains("crashed") && err(1).contains("SIGSEGV"), "{}", err(1));
        // The next candidate runs in a fresh worker and still counts.
        assert!(results[2].is_ok(), "{:?}", results[2]);
        assert!(err(3).contains("crashed"), "{}", err(3));
        assert!(err(4).contains("timed out"), "{}", err(4));
        assert!(results[5].is_ok(), "{:?}", results[5]);
        assert!(err(6).contains("wrong result") || err(6).contains("NaN"), "{}", err(6));
        assert_eq!(worker.spawned, 4, "one worker, and a new one after each crash or hang");
    }
}
