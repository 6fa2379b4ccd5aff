//! What a container's spec says about its own shutdown: preStop delay, stop timeout, shell,
//! Spring Boot settings.

use std::time::Duration;

use serde_json::Value;

use crate::workload::Workload;

/// The containers of `w` with their index, for field paths.
pub fn containers<'a>(w: &Workload<'a>) -> impl Iterator<Item = (usize, &'a Value)> + use<'a> {
    w.pod_spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// A literal env value of the container.
pub fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c.get("env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
}

/// The value of `--flag=value` or `--flag value` in the command or args.
pub fn arg<'a>(c: &'a Value, flag: &str) -> Option<&'a str> {
    let words: Vec<&str> = ["command", "args"]
        .iter()
        .filter_map(|k| c.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    words.iter().enumerate().find_map(|(i, w)| {
        w.strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
            .or_else(|| (*w == flag).then(|| words.get(i + 1).copied()).flatten())
    })
}

/// A humantime duration (`30s`, `1m30s`) or a bare number of seconds.
pub fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text)
        .ok()
        .or_else(|| text.parse::<u64>().ok().map(Duration::from_secs))
}

/// quiesce-init's `--drain-delay` when none is given.
const QUIESCE_INIT_DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// The preStop delay of one container: the sleep action, a `sleep N` exec, or quiesce-init's
/// drain delay (`QUIESCE_DRAIN_DELAY` / `--drain-delay`). With drain-until-quiet
/// (`QUIESCE_DRAIN_QUIET` / `--drain-until-quiet`) the drain may end much earlier; only its
/// maximum, the drain delay (quiesce-init's default 5 s when unset), is certain.
pub fn prestop_delay(c: &Value) -> Option<Duration> {
    if let Some(d) = env(c, "QUIESCE_DRAIN_DELAY").or_else(|| arg(c, "--drain-delay")) {
        return duration(d);
    }
    if env(c, "QUIESCE_DRAIN_QUIET")
        .or_else(|| arg(c, "--drain-until-quiet"))
        .is_some()
    {
        return Some(QUIESCE_INIT_DEFAULT_DRAIN_DELAY);
    }
    let pre = c.pointer("/lifecycle/preStop")?;
    if let Some(s) = pre.pointer("/sleep/seconds").and_then(Value::as_u64) {
        return Some(Duration::from_secs(s));
    }
    let words: Vec<&str> = pre
        .pointer("/exec/command")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .flat_map(str::split_whitespace)
        .collect();
    words
        .windows(2)
        .find(|w| w[0] == "sleep")
        .and_then(|w| duration(w[1].trim_end_matches(';')))
}

/// The app's own shutdown time, where the manifest shows it.
pub fn shutdown(c: &Value) -> Option<Duration> {
    env(c, "QUIESCE_STOP_TIMEOUT")
        .or_else(|| arg(c, "--stop-timeout"))
        .or_else(|| env(c, "SPRING_LIFECYCLE_TIMEOUT_PER_SHUTDOWN_PHASE"))
        .and_then(duration)
}

/// The shell an exec preStop runs, if it runs one.
pub fn exec_prestop_shell(c: &Value) -> Option<String> {
    let first = c.pointer("/lifecycle/preStop/exec/command/0")?.as_str()?;
    let base = first.rsplit('/').next().unwrap_or(first);
    matches!(base, "sh" | "bash" | "ash" | "dash" | "zsh").then(|| first.to_string())
}

/// Whether the env, command or image shows a Spring Boot app.
pub fn looks_like_spring_boot(c: &Value) -> bool {
    let env_says = c
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|e| {
            e.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("SPRING_"))
        });
    let args_say = ["command", "args"]
        .iter()
        .filter_map(|k| c.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .any(|a| a.contains("spring.") || a.contains("spring-boot"));
    env_says || args_say
}

/// Whether graceful shutdown is switched on (env or argument).
pub fn spring_graceful(c: &Value) -> bool {
    env(c, "SERVER_SHUTDOWN").is_some_and(|v| v.eq_ignore_ascii_case("graceful"))
        || arg(c, "--server.shutdown").is_some_and(|v| v.eq_ignore_ascii_case("graceful"))
        || env(c, "JAVA_TOOL_OPTIONS").is_some_and(|v| v.contains("server.shutdown=graceful"))
}
