//! Baseline 4: a raw pipelined `incr` load against the memcached the
//! memcached cache uses: each task holds its own connection and sends
//! pipelines of 16 text-protocol `incr`/`decr` commands, nothing else.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::driver::LoadOutcome;
use crate::latency::LatencyRecorder;
use crate::server_work::CommandStats;
use crate::workload::TaskSequence;

/// Commands per pipeline.
pub const PIPELINE: usize = 16;

/// `host:port` of a `memcache://HOST:PORT[?...]` URL.
pub fn address_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("memcache://")?;
    let authority = rest.split(['?', '/']).next()?;
    (!authority.is_empty()).then(|| authority.to_string())
}

/// Sets every key to 0 (memcached's `incr` needs an existing value).
pub async fn prepare(address: &str, keys: &[String]) -> Result<(), String> {
    let stream =
        TcpStream::connect(address).await.map_err(|e| format!("cannot connect to memcached at {address}: {e}"))?;
    let mut stream = BufReader::new(stream);
    for chunk in keys.chunks(100) {
        let mut out = String::new();
        for key in chunk {
            out.push_str(&format!("set {key} 0 0 1\r\n0\r\n"));
        }
        stream.get_mut().write_all(out.as_bytes()).await.map_err(|e| e.to_string())?;
        for _ in chunk {
            let line = read_line(&mut stream).await?;
            if line != "STORED" {
                return Err(format!("memcached answered {line:?} to set"));
            }
        }
    }
    Ok(())
}

/// The server's `stats` (see [`CommandStats::add_memcached_stats`]).
pub async fn read_stats(address: &str) -> Result<CommandStats, String> {
    let stream =
        TcpStream::connect(address).await.map_err(|e| format!("cannot connect to memcached at {address}: {e}"))?;
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(b"stats\r\n").await.map_err(|e| e.to_string())?;
    let mut text = String::new();
    loop {
        let line = read_line(&mut stream).await?;
        if line == "END" {
            break;
        }
        text.push_str(&line);
        text.push('\n');
    }
    let mut stats = CommandStats::default();
    stats.add_memcached_stats(&text);
    Ok(stats)
}

async fn read_line(stream: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
        return Err("memcached closed the connection".into());
    }
    Ok(line.trim_end().to_string())
}

/// Runs one connection per sequence for `duration`, pipelining [`PIPELINE`]
/// increments at a time. The latency is that of a whole pipeline.
pub async fn run(address: &str, keys: &[String], sequences: Vec<TaskSequence>, duration: Duration) -> LoadOutcome {
    let cpu_before = crate::process_cpu::used();
    let started = Instant::now();
    let handles: Vec<_> = sequences
        .into_iter()
        .map(|sequence| {
            let (address, keys) = (address.to_string(), keys.to_vec());
            tokio::spawn(async move { connection_loop(&address, &keys, sequence, started + duration).await })
        })
        .collect();
    let mut outcome = LoadOutcome::default();
    let mut latency = LatencyRecorder::default();
    for handle in handles {
        match handle.await.expect("a memcached load task panicked") {
            Ok((done, recorder)) => {
                outcome.increments += done;
                latency.merge(&recorder);
            }
            Err(e) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(e);
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latency = latency.summary();
    outcome.client_cpu = crate::process_cpu::used().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
    outcome
}

async fn connection_loop(
    address: &str,
    keys: &[String],
    mut sequence: TaskSequence,
    deadline: Instant,
) -> Result<(u64, LatencyRecorder), String> {
    let stream =
        TcpStream::connect(address).await.map_err(|e| format!("cannot connect to memcached at {address}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut stream = BufReader::new(stream);
    let mut recorder = LatencyRecorder::default();
    let mut done = 0;
    let mut out = String::with_capacity(PIPELINE * 48);
    while Instant::now() < deadline {
        out.clear();
        for _ in 0..PIPELINE {
            let (key, delta) = sequence.next_choice();
            let verb = if delta < 0 { "decr" } else { "incr" };
            out.push_str(&format!("{verb} {} {}\r\n", keys[key], delta.unsigned_abs()));
        }
        let start = Instant::now();
        stream.get_mut().write_all(out.as_bytes()).await.map_err(|e| e.to_string())?;
        for _ in 0..PIPELINE {
            let line = read_line(&mut stream).await?;
            if !line.bytes().all(|b| b.is_ascii_digit()) || line.is_empty() {
                return Err(format!("memcached answered {line:?} to incr"));
            }
        }
        recorder.record(start.elapsed());
        done += PIPELINE as u64;
    }
    Ok((done, recorder))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_address_of_urls() {
        assert_eq!(super::address_of("memcache://127.0.0.1:11311?prefix=x").as_deref(), Some("127.0.0.1:11311"));
        assert_eq!(super::address_of("redis://h:1"), None);
    }
}
