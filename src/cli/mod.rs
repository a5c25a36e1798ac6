//! The `fortifile` command: `serve`, `migrate`, `seed`, `create-admin`, `audit`.

mod admin;
mod audit;
mod jobs;
mod serve;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    config::Config,
    db::{Database, DbTarget, seed, setup},
};

#[derive(Parser)]
#[command(name = "fortifile", version, about = "FortiFile: a secure document-sharing server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and default data, then serve HTTP until Ctrl-C or SIGTERM.
    Serve,
    /// Apply pending database migrations.
    Migrate,
    /// Load a role preset (with the clearance levels and default department)
    /// into a tenant, creating the tenant if needed. Adds what is missing and
    /// never changes existing data.
    Seed {
        /// The tenant's slug.
        #[arg(long, default_value = seed::DEFAULT_TENANT)]
        tenant: String,
        /// The preset: fortifile (admin, staff, student), compliance (seed 001's
        /// eleven roles) or engineering (seed 003's four roles).
        #[arg(long, default_value = seed::DEFAULT_PRESET)]
        preset: String,
    },
    /// Create an active administrator with the tenant's highest clearance. The
    /// password comes from FORTIFILE_ADMIN_PASSWORD or a hidden prompt.
    CreateAdmin {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = seed::DEFAULT_TENANT)]
        tenant: String,
        /// The role to give (e.g. CompanyAdmin in a tenant seeded with `compliance`).
        #[arg(long, default_value = "admin")]
        role: String,
    },
    /// The audit log's integrity: verify the chain or an archive, print the
    /// checkpoints' public key, list archives.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
}

/// Entry point of the binary.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("error: .env: {e}");
        return ExitCode::from(2);
    }
    crate::telemetry::init_log(crate::config::LogFormat::from_env());
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    let mut target = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || DbTarget::resolve(&config)).await.context("starting the database")??
    };
    let result = match command {
        Command::Serve => serve::run(&config, &target).await,
        Command::Migrate => prepare(&target).await.map(|_| println!("migrations applied")),
        Command::Seed { tenant, preset } => seed_tenant(&target, &tenant, &preset).await,
        Command::CreateAdmin { username, email, tenant, role } => {
            admin::create_admin(&target, &admin::NewAdmin { username, email, tenant, role }).await
        }
        Command::Audit { command } => audit::run(&config, &target, command).await,
    };
    target.shutdown().await;
    result
}

/// Creates the embedded database if needed and applies migrations.
async fn prepare(target: &DbTarget) -> anyhow::Result<()> {
    if target.embedded.is_some() {
        setup::ensure_embedded_database(&target.owner).await?;
    }
    setup::migrate(&target.owner).await
}

/// Migrates, then connects as the serving role.
async fn connect(target: &DbTarget, max_connections: u32) -> anyhow::Result<Database> {
    prepare(target).await?;
    Database::connect(target.app.clone(), max_connections).await
}

async fn seed_tenant(target: &DbTarget, slug: &str, preset: &str) -> anyhow::Result<()> {
    check_slug(slug)?;
    seed::Preset::named(preset)?;
    let db = connect(target, 2).await?;
    let (tenant, created) = seed::ensure_tenant(&target.owner, slug, slug).await?;
    let mut report = seed::apply_preset(&db, tenant, preset).await?;
    report.tenant_created = created;
    println!("seeded tenant {slug:?} with preset {preset:?}: {report}");
    db.close().await;
    Ok(())
}

fn check_slug(slug: &str) -> anyhow::Result<()> {
    let ok = (1..=63).contains(&slug.len())
        && slug.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    anyhow::ensure!(ok, "--tenant: a slug is 1 to 63 characters of a-z, 0-9 and '-', not starting with '-'");
    Ok(())
}
