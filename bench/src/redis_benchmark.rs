//! Baseline 3: `redis-benchmark -t incr -P 16` against the Redis server the
//! Redis cache uses: plain pipelined `INCR`s from 50 connections, the most
//! Redis does for counting with nothing else attached.

use std::time::Duration;

use serde::Serialize;
use tokio::process::Command;

/// Requests of the calibration run that sizes the measured one.
const CALIBRATION_REQUESTS: u64 = 200_000;

/// What one `redis-benchmark` run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedisBenchmarkResult {
    /// The command line run.
    pub command: String,
    /// `INCR` requests sent.
    pub requests: u64,
    /// Requests per second, as redis-benchmark reports it.
    pub ops_per_sec: f64,
    /// Median latency of a pipelined request, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
}

/// Host and port of a `redis://HOST:PORT[/DB][?...]` URL, or of the first
/// node of a `redis+cluster://` one (with `true`: pass `--cluster`).
pub fn endpoint_of(url: &str) -> Option<(String, u16, bool)> {
    let (scheme, rest) = url.split_once("://")?;
    let cluster = match scheme {
        "redis" => false,
        "redis+cluster" => true,
        _ => return None,
    };
    let rest = rest.split(['?', '/']).next()?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let first = rest.split(',').next()?;
    let (host, port) = first.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?, cluster))
}

/// Runs `redis-benchmark -t incr -P 16` over `keys` random keys for about
/// `duration` (a short calibration run first sizes the request count).
pub async fn run(url: &str, keys: usize, duration: Duration) -> Result<RedisBenchmarkResult, String> {
    let (host, port, cluster) = endpoint_of(url).ok_or_else(|| format!("cannot find a host:port in {url:?}"))?;
    let calibration = run_once(&host, port, cluster, keys, CALIBRATION_REQUESTS).await?;
    let requests = ((calibration.ops_per_sec * duration.as_secs_f64()) as u64).max(CALIBRATION_REQUESTS);
    run_once(&host, port, cluster, keys, requests).await
}

async fn run_once(
    host: &str,
    port: u16,
    cluster: bool,
    keys: usize,
    requests: u64,
) -> Result<RedisBenchmarkResult, String> {
    let mut args: Vec<String> = vec!["-h".into(), host.into(), "-p".into(), port.to_string()];
    if cluster {
        args.push("--cluster".into());
    }
    for arg in ["-t", "incr", "-P", "16", "-q", "--csv", "-r"] {
        args.push(arg.into());
    }
    args.push(keys.to_string());
    args.push("-n".into());
    args.push(requests.to_string());
    let command = format!("redis-benchmark {}", args.join(" "));
    let output = Command::new("redis-benchmark")
        .args(&args)
        .output()
        .await
        .map_err(|e| format!("cannot run redis-benchmark (Debian package redis-tools): {e}"))?;
    if !output.status.success() {
        return Err(format!("{command} failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let (ops_per_sec, p50_ms, p99_ms) =
        parse_csv(&text).ok_or_else(|| format!("unexpected output of {command}: {text:?}"))?;
    Ok(RedisBenchmarkResult { command, requests, ops_per_sec, p50_us: p50_ms * 1e3, p99_us: p99_ms * 1e3 })
}

/// Requests per second, p50 and p99 (ms) of the `INCR` row of
/// redis-benchmark's `--csv` output.
fn parse_csv(text: &str) -> Option<(f64, f64, f64)> {
    let unquote = |line: &str| line.split(',').map(|f| f.trim().trim_matches('"').to_string()).collect::<Vec<_>>();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = unquote(lines.next()?);
    let row = lines.map(unquote).find(|r| r.first().is_some_and(|t| t.eq_ignore_ascii_case("incr")))?;
    let column = |name: &str| -> Option<f64> { row.get(header.iter().position(|h| h == name)?)?.parse().ok() };
    Some((column("rps")?, column("p50_latency_ms")?, column("p99_latency_ms")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_csv_of_redis_7() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\
                    \"p99_latency_ms\",\"max_latency_ms\"\n\"INCR\",\"396825.38\",\"1.817\",\"0.232\",\"1.831\",\
                    \"2.639\",\"3.231\",\"4.151\"\n";
        assert_eq!(parse_csv(text), Some((396825.38, 1.831, 3.231)));
    }

    #[test]
    fn finds_the_endpoint_of_urls() {
        assert_eq!(endpoint_of("redis://127.0.0.1:6391?prefix=x"), Some(("127.0.0.1".into(), 6391, false)));
        assert_eq!(endpoint_of("redis://u:p@h:1/2"), Some(("h".into(), 1, false)));
        assert_eq!(endpoint_of("redis+cluster://a:1,b:2"), Some(("a".into(), 1, true)));
        assert_eq!(endpoint_of("memory://"), None);
    }
}
