//! `scripted-model`: runs the scripted Anthropic Messages API server on its own, for trying
//! the agent CLIs by hand. It must not hold any logic of its own beyond flags and Ctrl-C.

use clap::Parser;
use rdev_testkit::ScriptedModel;

/// Serve the scripted model on 127.0.0.1 until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "scripted-model", version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let model = ScriptedModel::start_on(args.port).await?;
    println!("scripted-model listening on {}", model.base_url());
    tokio::signal::ctrl_c().await?;
    model.shutdown();
    Ok(())
}
