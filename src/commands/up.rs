//! `pipe up`: a running local machine, provisioned exactly like the environment's image.
//! Idempotent: with nothing changed it only checks and says so.

use crate::cli::UpArgs;
use crate::error::Result;
use crate::state::State;

use super::Ctx;

pub fn run(ctx: &Ctx, args: UpArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let sel = super::local::selection(ctx, args.local, args.target.clone());
    // The target first: an ec2 environment is refused before its plan would ask AWS for the
    // box's AMI.
    let env = crate::plan::pick_env(&pf, sel.env.as_deref())?;
    let kind = crate::plan::effective_target(&pf, &env, &sel)?;
    let target = crate::targets::open_local(kind, &pf, "up")?;
    let plan = {
        let _p = ctx.printer.phase("plan and digests");
        crate::plan::make(&pf, &sel, ctx.printer)?
    };
    let up = target.up(&plan, args.keep_on_error, ctx.printer)?;
    let mut st = State::load(&pf.root);
    st.machines.insert(plan.env.clone(), up.state.clone());
    st.save(&pf.root)?;
    let mut human = format!(
        "machine {} (env {}{}) is {}: app {}",
        up.name,
        plan.env,
        up.detail,
        up.what,
        plan.digests.app.short()
    );
    if let Some(login) = &up.login {
        human.push_str(&format!("\n  {login}"));
    }
    for p in &up.ports {
        human.push_str(&format!(
            "\n  {} http://127.0.0.1:{}/",
            p.service, p.host_port
        ));
    }
    let mut data = serde_json::json!({
        "env": plan.env,
        "target": target.kind().as_str(),
        "machine": up.name,
        "state": up.what,
        "base_digest": plan.digests.base.to_string(),
        "app_digest": plan.digests.app.to_string(),
        "ports": up.ports.iter().map(|p| serde_json::json!({"service": p.service, "host": "127.0.0.1", "port": p.host_port})).collect::<Vec<_>>(),
    });
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), up.extra) {
        data.extend(extra);
    }
    ctx.printer.result("up", data, &human);
    if args.watch {
        let w = crate::targets::watch::run(&*target, &plan, ctx.printer)?;
        let human = if w.syncs == 0 {
            format!(
                "stopped watching; {} keeps running as its image made it",
                w.machine
            )
        } else {
            format!(
                "stopped watching; {} keeps running with what watch synced: its image is behind the machine until the next `pipe up`",
                w.machine
            )
        };
        ctx.printer.result(
            "watch",
            serde_json::json!({"env": plan.env, "machine": w.machine, "syncs": w.syncs, "image_behind": w.syncs > 0}),
            &human,
        );
    }
    Ok(())
}
