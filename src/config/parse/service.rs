//! `[[service]]` and `[verify]`.

use crate::config::model::{HttpCheck, Service, Spanned, Verify};
use crate::config::walk::{self, Tbl, Walker};

use crate::config::keys::{HTTP_CHECK_KEYS, SERVICE_KEYS, VERIFY_KEYS};

/// Default seconds `[verify]` keeps retrying.
pub const DEFAULT_VERIFY_TIMEOUT: u64 = 60;

/// `[[service]]`.
pub fn services(w: &mut Walker, root: &Tbl<'_, '_>) -> Vec<Service> {
    let Some(v) = root.get("service") else {
        return Vec::new();
    };
    if v.get_ref().is_table() {
        w.error_hint(
            "expected an array of tables for `service`, found a table",
            root.key_span("service").unwrap_or(walk::span(v)),
            "write `[[service]]` (double brackets), once per service",
        );
        return Vec::new();
    }
    let Some(items) = walk::array(w, v, "`service`") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        if let Some(s) =
            walk::table(w, item, "a service", "this [[service]]").and_then(|t| service(w, &t))
        {
            out.push(s);
        }
    }
    out
}

fn service(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<Service> {
    t.check_keys(w, SERVICE_KEYS);
    if !t.has("name") {
        t.missing(
            w,
            "name",
            Some("e.g. `name = \"web\"`; `pipe logs NAME` uses it".into()),
        );
    }
    let name = t.str(w, "name");
    if let Some(n) = &name {
        super::names::check_name(w, "service", &n.value, n.span);
    }
    if !t.has("command") {
        t.missing(
            w,
            "command",
            Some("the command that runs it in the foreground, run with `sh -c`".into()),
        );
    }
    let command = t.template(w, "command");
    if let Some(c) = &command {
        super::names::check_line(w, "the service command", &c.raw, c.span);
    }
    let user = t.str(w, "user");
    if let Some(u) = &user {
        super::names::check_line(w, "`user`", &u.value, u.span);
    }
    let workdir = t.str(w, "workdir");
    if let Some(d) = &workdir {
        super::names::check_machine_path(
            w,
            "`workdir`",
            &crate::config::model::Template {
                raw: d.value.clone(),
                span: d.span,
            },
        );
    }
    let port = port_number(w, t, "port");
    let host_port = port_number(w, t, "host_port");
    let publish = t
        .get("publish")
        .and_then(|v| walk::boolean(w, v, "`publish`"));
    if port.is_none() && !t.has("port") {
        if let Some(hp) = &host_port {
            w.error_hint(
                "`host_port` needs `port`",
                hp.span,
                "`port` is where the service listens inside the machine; `host_port` is where the host reaches it",
            );
        } else if let Some(p) = publish.as_ref().filter(|p| p.value) {
            w.error_hint(
                "`publish = true` needs `port`",
                p.span,
                "add the port the service listens on",
            );
        }
    }
    Some(Service {
        name: name?,
        command: command?,
        user: user.map(|s| s.value),
        workdir: workdir.map(|s| s.value),
        env: t.env_table(w, "env"),
        publish: publish.map_or(port.is_some(), |p| p.value),
        port,
        host_port,
        span: t.span,
    })
}

fn port_number(w: &mut Walker, t: &Tbl<'_, '_>, key: &str) -> Option<Spanned<u16>> {
    let p = t.int(w, key)?;
    match u16::try_from(p.value) {
        Ok(n) if n > 0 => Some(Spanned::new(n, p.span)),
        _ => {
            w.error_hint(
                format!("`{key}` {} is out of range", p.value),
                p.span,
                "ports are 1 to 65535",
            );
            None
        }
    }
}

/// `[verify]`.
pub fn verify(w: &mut Walker, root: &Tbl<'_, '_>) -> Verify {
    let mut out = Verify {
        commands: Vec::new(),
        http: Vec::new(),
        timeout: DEFAULT_VERIFY_TIMEOUT,
    };
    let Some(v) = root.get("verify") else {
        return out;
    };
    let Some(t) = walk::table(w, v, "`verify`", "[verify]") else {
        return out;
    };
    t.check_keys(w, VERIFY_KEYS);
    out.commands = t.template_array(w, "commands").unwrap_or_default();
    if let Some(items) = t.array(w, "http") {
        for item in items {
            if let Some(c) = walk::table(w, item, "an http check", "this http check")
                .and_then(|c| http_check(w, &c))
            {
                out.http.push(c);
            }
        }
    }
    if let Some(timeout) = t.int(w, "timeout") {
        if timeout.value <= 0 {
            w.error_hint(
                format!(
                    "`timeout` must be at least 1 second, found {}",
                    timeout.value
                ),
                timeout.span,
                format!("leave it out for the default, {DEFAULT_VERIFY_TIMEOUT} seconds"),
            );
        } else {
            out.timeout = timeout.value as u64;
        }
    }
    out
}

fn http_check(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<HttpCheck> {
    t.check_keys(w, HTTP_CHECK_KEYS);
    let url = t.req_template(w, "url");
    let status = t.int(w, "status").and_then(|s| {
        if (100..=599).contains(&s.value) {
            Some(s.value as u16)
        } else {
            w.error_hint(
                format!("HTTP status {} is out of range", s.value),
                s.span,
                "statuses are 100 to 599",
            );
            None
        }
    });
    let contains = t.template(w, "contains");
    Some(HttpCheck {
        url: url?,
        status: status.unwrap_or(200),
        contains,
        span: t.span,
    })
}
