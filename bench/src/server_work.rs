//! What a cache server did during a phase, by its own accounting (Redis
//! `INFO commandstats` and `INFO cpu`; memcached `stats`): commands,
//! microseconds in commands (Redis only) and microseconds of server CPU per
//! increment.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the server counted in `INFO commandstats`, summed over every node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CommandStats {
    /// Calls per command (lower case, as Redis names them).
    pub calls: BTreeMap<String, u64>,
    /// Microseconds in commands, each command once: the time of script
    /// calls (`EVAL`, `EVALSHA`, `FCALL`) is left out, because Redis also
    /// counts every command a script runs on its own.
    pub usec: u64,
    /// Microseconds of server CPU (user and system, the whole process:
    /// commands, scripts, network I/O).
    pub cpu_usec: u64,
}

/// Commands whose time includes the commands they run.
fn is_script(name: &str) -> bool {
    name.starts_with("eval") || name.starts_with("fcall")
}

impl CommandStats {
    /// Adds the `cmdstat_<name>:calls=N,usec=U,...` lines of one reply.
    pub fn add_info(&mut self, text: &str) {
        for line in text.lines() {
            let Some((name, fields)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
                continue;
            };
            for field in fields.split(',') {
                match field.split_once('=') {
                    Some(("calls", n)) => *self.calls.entry(name.to_string()).or_default() += n.parse().unwrap_or(0),
                    Some(("usec", n)) if !is_script(name) => self.usec += n.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }

    /// Adds the `used_cpu_sys` and `used_cpu_user` lines (seconds) of one
    /// `INFO cpu` reply.
    pub fn add_cpu(&mut self, text: &str) {
        for line in text.lines() {
            let Some((name, seconds)) = line.trim().split_once(':') else { continue };
            if name == "used_cpu_sys" || name == "used_cpu_user" {
                self.cpu_usec += (seconds.parse::<f64>().unwrap_or(0.0) * 1e6).round() as u64;
            }
        }
    }

    /// Reads the lines of a memcached `stats` reply (`STAT <name> <value>`):
    /// its commands by kind, whichever protocol sent them (a meta `mg`
    /// counts as a get, `ms` as a set, `ma` as an incr or decr, `md` as a
    /// delete), and its CPU (`rusage_user`, `rusage_system`, seconds).
    /// memcached keeps no time per command.
    pub fn add_memcached_stats(&mut self, text: &str) {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some("STAT"), Some(name), Some(value)) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            let command = match name {
                "cmd_get" => "get",
                "cmd_set" => "set",
                "cmd_touch" => "touch",
                "cmd_flush" => "flush_all",
                "incr_hits" | "incr_misses" => "incr",
                "decr_hits" | "decr_misses" => "decr",
                "delete_hits" | "delete_misses" => "delete",
                "rusage_user" | "rusage_system" => {
                    self.cpu_usec += (value.parse::<f64>().unwrap_or(0.0) * 1e6).round() as u64;
                    continue;
                }
                _ => continue,
            };
            *self.calls.entry(command.to_string()).or_default() += value.parse().unwrap_or(0);
        }
    }

    /// What happened between `before` and `self`, without the commands
    /// that read the figures (`info`) and with commands that did not run
    /// left out.
    pub fn since(&self, before: &CommandStats) -> CommandStats {
        let mut calls = BTreeMap::new();
        for (name, n) in &self.calls {
            let delta = n.saturating_sub(before.calls.get(name).copied().unwrap_or(0));
            if delta > 0 && name != "info" {
                calls.insert(name.clone(), delta);
            }
        }
        CommandStats {
            calls,
            usec: self.usec.saturating_sub(before.usec),
            cpu_usec: self.cpu_usec.saturating_sub(before.cpu_usec),
        }
    }
}

/// The server's work during one phase, per successful increment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerWork {
    /// Commands the server ran, in all (scripts count as one, and each
    /// command a script calls counts too, as Redis counts them).
    pub commands: u64,
    /// Commands per successful increment.
    pub commands_per_increment: f64,
    /// Microseconds in commands per successful increment (see
    /// [`CommandStats::usec`]).
    pub usec_per_increment: f64,
    /// Microseconds of server CPU per successful increment.
    pub cpu_usec_per_increment: f64,
    /// The calls by command.
    pub calls: BTreeMap<String, u64>,
}

impl ServerWork {
    /// The work of `stats` (a difference) spread over `increments`.
    pub fn of(stats: CommandStats, increments: u64) -> ServerWork {
        let per = increments.max(1) as f64;
        let commands = stats.calls.values().sum();
        ServerWork {
            commands,
            commands_per_increment: commands as f64 / per,
            usec_per_increment: stats.usec as f64 / per,
            cpu_usec_per_increment: stats.cpu_usec as f64 / per,
            calls: stats.calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_stats_count_commands_by_kind() {
        let mut before = CommandStats::default();
        before.add_memcached_stats(
            "STAT pid 1\r\nSTAT cmd_get 10\r\nSTAT incr_hits 4\r\nSTAT rusage_user 0.5\r\nEND\r\n",
        );
        let mut after = CommandStats::default();
        after.add_memcached_stats(
            "STAT cmd_get 25\r\nSTAT incr_hits 9\r\nSTAT incr_misses 1\r\nSTAT rusage_user 0.75\r\nSTAT rusage_system 0.25\r\nEND\r\n",
        );
        let spent = after.since(&before);
        assert_eq!(spent.calls.get("get"), Some(&15));
        assert_eq!(spent.calls.get("incr"), Some(&6));
        assert_eq!(spent.cpu_usec, 500_000);
        let work = ServerWork::of(spent, 6);
        assert_eq!(work.commands, 21);
        assert!((work.commands_per_increment - 3.5).abs() < 1e-9);
    }

    #[test]
    fn commandstats_lines_add_up_and_subtract() {
        let mut before = CommandStats::default();
        before.add_info("# Commandstats\r\ncmdstat_hincrby:calls=10,usec=20,usec_per_call=2.00,rejected_calls=0\r\n");
        let mut after = CommandStats::default();
        after.add_info(
            "cmdstat_hincrby:calls=15,usec=30,usec_per_call=2.00\r\ncmdstat_info:calls=3,usec=9\r\ncmdstat_zadd:calls=4,usec=8\r\n",
        );
        after.add_info("cmdstat_evalsha:calls=1,usec=500\r\n");
        before.add_cpu("# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.000000\r\nused_cpu_sys_children:9.0\r\n");
        after.add_cpu("used_cpu_sys:1.500018\r\nused_cpu_user:2.000018\r\n");
        let delta = after.since(&before);
        assert_eq!(delta.calls.get("hincrby"), Some(&5));
        assert_eq!(delta.calls.get("zadd"), Some(&4));
        assert!(!delta.calls.contains_key("info"));
        assert_eq!(delta.usec, 27, "a script's time is not counted again");
        assert_eq!(delta.cpu_usec, 36);
        let work = ServerWork::of(delta, 9);
        assert_eq!(work.commands, 10);
        assert!((work.usec_per_increment - 3.0).abs() < 1e-9);
        assert!((work.cpu_usec_per_increment - 4.0).abs() < 1e-9);
    }
}
