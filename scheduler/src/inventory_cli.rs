//! The inventory's subcommands: `import`, `report`, `results` and
//! `inventory load|export|run`. Kept apart from `main.rs`, which only
//! flattens them into its command list.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use rolecall_common::config::{Preference, SorMissing, SyncKey};
use rolecall_common::inventory::InventoryStore;
use rolecall_common::{Names, Settings};
use rolecall_scheduler::inventory::{Format, REDIS_INVENTORY};
use rolecall_scheduler::seats::{self, OutputFormat};
use rolecall_scheduler::{RunOnceOptions, http_source, import, results, run_once, sor};

#[derive(Subcommand)]
pub enum InventoryCommand {
    /// List every user the vendor has and upsert them into the Redis
    /// inventory (within the fleet-wide rate limit).
    Import {
        /// SaaS app.
        #[arg(long)]
        saas: String,
        /// email (case-insensitive) or external_id; `inventory.sync_key` by default.
        #[arg(long)]
        sync_key: Option<String>,
        /// create_and_update, create_only or update_only; `inventory.preference` by default.
        #[arg(long)]
        preference: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Seats nobody owns: shadow accounts, users the vendor no longer has,
    /// stale logins, with seat prices and the reclaimable total.
    Report {
        /// SaaS app.
        #[arg(long)]
        saas: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: FormatOut,
        /// Days without a login that make a seat stale; `inventory.stale_after_days` by default.
        #[arg(long)]
        stale_days: Option<u32>,
    },
    /// Export the per-user role results (user, role, normalized role, seat
    /// price, checked at).
    Results {
        /// SaaS app.
        #[arg(long)]
        saas: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: FormatOut,
    },
    /// The Redis inventory's system-of-record side.
    Inventory {
        #[command(subcommand)]
        action: InventoryAction,
    },
}

#[derive(Subcommand)]
pub enum InventoryAction {
    /// Load an inventory file (CSV or JSON Lines) as the system of record.
    Load {
        /// The file.
        #[arg(long)]
        file: PathBuf,
        /// SaaS app (repeatable); every configured app by default.
        #[arg(long = "saas")]
        saas: Vec<String>,
        /// email or external_id; `inventory.sync_key` by default.
        #[arg(long)]
        sync_key: Option<String>,
        /// create_and_update (default), create_only or update_only.
        #[arg(long)]
        preference: Option<String>,
        /// keep, inactive or removed: what a complete load does to the
        /// file's earlier records it no longer has; `inventory.sor_missing`
        /// by default.
        #[arg(long)]
        missing: Option<String>,
    },
    /// Page through an HTTP system of record (`[inventory.sources.<name>]`)
    /// into the Redis inventory.
    Sync {
        /// The source's name.
        #[arg(long)]
        source: String,
        /// create_and_update (default), create_only or update_only.
        #[arg(long)]
        preference: Option<String>,
        /// keep, inactive or removed: what a complete sync does to the
        /// source's records it no longer lists; the source's `missing`,
        /// else `inventory.sor_missing`, by default.
        #[arg(long)]
        missing: Option<String>,
    },
    /// Write the Redis inventory as JSON Lines (stdout by default).
    Export {
        /// SaaS app (repeatable); every configured app by default.
        #[arg(long = "saas")]
        saas: Vec<String>,
        /// Output file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the role checks of the Redis inventory, as `run-once` does:
    /// straight from Redis (as `run-once --inventory redis:inventory`), or
    /// from a JSON Lines snapshot of it.
    Run {
        /// SaaS app (repeatable); every configured app by default.
        #[arg(long = "saas")]
        saas: Vec<String>,
        /// Snapshot the inventory to this file (in key order) and publish
        /// from it; run again with the same path to resume a run whose
        /// publisher stopped. Without it the run reads Redis directly.
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatOut {
    Table,
    Csv,
    Json,
}

impl From<FormatOut> for OutputFormat {
    fn from(f: FormatOut) -> Self {
        match f {
            FormatOut::Table => OutputFormat::Table,
            FormatOut::Csv => OutputFormat::Csv,
            FormatOut::Json => OutputFormat::Json,
        }
    }
}

fn sync_key(text: Option<String>, settings: &Settings) -> anyhow::Result<SyncKey> {
    match text {
        None => Ok(settings.inventory.sync_key),
        Some(t) => {
            SyncKey::parse(&t).with_context(|| format!("`{t}` is not `email` or `external_id`"))
        }
    }
}

fn parse_preference(text: Option<String>) -> anyhow::Result<Option<Preference>> {
    text.map(|p| {
        Preference::parse(&p).with_context(|| {
            format!("--preference: `{p}` is not create_and_update, create_only or update_only")
        })
    })
    .transpose()
}

fn parse_missing(text: Option<String>) -> anyhow::Result<Option<SorMissing>> {
    text.map(|m| {
        SorMissing::parse(&m)
            .with_context(|| format!("--missing: `{m}` is not keep, inactive or removed"))
    })
    .transpose()
}

fn apps(asked: Vec<String>, settings: &Settings) -> anyhow::Result<Vec<String>> {
    if asked.is_empty() {
        return Ok(settings.saas.keys().cloned().collect());
    }
    for name in &asked {
        rolecall_scheduler::saas_app(settings, name)?;
    }
    Ok(asked)
}

async fn store(settings: &Settings) -> anyhow::Result<InventoryStore> {
    let conn = rolecall_common::ledger::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    Ok(InventoryStore::new(conn, &Names::new(&settings.namespace)))
}

pub async fn run(command: InventoryCommand, settings: Settings) -> anyhow::Result<()> {
    match command {
        InventoryCommand::Import {
            saas,
            sync_key: key,
            preference,
            json,
        } => {
            let preference = parse_preference(preference)?;
            let options = import::ImportOptions {
                saas,
                sync_key: Some(sync_key(key, &settings)?),
                preference,
            };
            let vault = rolecall_common::credentials::Vault::new(settings.credentials.clone());
            let report = import::import(&settings, &vault, &options).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(())
        }
        InventoryCommand::Report {
            saas,
            format,
            stale_days,
        } => {
            let app = rolecall_scheduler::saas_app(&settings, &saas)?;
            let days = stale_days.unwrap_or(settings.inventory.stale_after_days);
            let report =
                seats::report(&store(&settings).await?, app, days, chrono::Utc::now()).await?;
            print!("{}", seats::render(&report, format.into())?);
            Ok(())
        }
        InventoryCommand::Results { saas, format } => {
            let conn = rolecall_common::ledger::connect(&settings.redis)
                .await
                .context("connecting to Redis")?;
            let names = Names::new(&settings.namespace);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            results::export(&conn, &names, &saas, format.into(), &mut out).await?;
            Ok(())
        }
        InventoryCommand::Inventory { action } => inventory(action, settings).await,
    }
}

async fn inventory(action: InventoryAction, settings: Settings) -> anyhow::Result<()> {
    match action {
        InventoryAction::Load {
            file,
            saas,
            sync_key: key,
            preference: asked,
            missing: gone,
        } => {
            let apps = apps(saas, &settings)?;
            let options = sor::LoadOptions {
                sync_key: sync_key(key, &settings)?,
                preference: parse_preference(asked)?.unwrap_or(Preference::CreateAndUpdate),
                missing: parse_missing(gone)?.unwrap_or(settings.inventory.sor_missing),
                max_marked_share: settings.inventory.max_marked_share,
            };
            let report = sor::load(
                &store(&settings).await?,
                &file,
                Format::from_path(&file),
                &apps,
                &options,
            )
            .await?;
            print!("{}", report.render(&format!("loaded {}", file.display())));
            Ok(())
        }
        InventoryAction::Sync {
            source,
            preference: asked,
            missing: gone,
        } => {
            let vault = rolecall_common::credentials::Vault::new(settings.credentials.clone());
            let http =
                http_source::HttpSource::open(&settings.inventory.sources, &source, &vault).await?;
            let options = sor::LoadOptions {
                sync_key: settings.inventory.sync_key,
                preference: parse_preference(asked)?.unwrap_or(Preference::CreateAndUpdate),
                missing: parse_missing(gone)?
                    .unwrap_or(http.missing(settings.inventory.sor_missing)),
                max_marked_share: settings.inventory.max_marked_share,
            };
            let report = http.sync(&store(&settings).await?, &options).await?;
            print!("{}", report.render(&format!("synced {source}")));
            Ok(())
        }
        InventoryAction::Export { saas, out } => {
            let apps = apps(saas, &settings)?;
            let store = store(&settings).await?;
            let written = match out {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    sor::export(&store, &apps, &mut std::io::BufWriter::new(file)).await?
                }
                None => {
                    let stdout = std::io::stdout();
                    sor::export(&store, &apps, &mut std::io::BufWriter::new(stdout.lock())).await?
                }
            };
            eprintln!("exported {written} users");
            Ok(())
        }
        InventoryAction::Run { saas, snapshot } => {
            let apps = apps(saas, &settings)?;
            let (inventory, format) = match snapshot {
                None => (PathBuf::from(REDIS_INVENTORY), Format::Redis),
                Some(snapshot) => {
                    write_snapshot(&settings, &apps, &snapshot).await?;
                    (snapshot, Format::JsonLines)
                }
            };
            let report = run_once(
                &settings,
                RunOnceOptions {
                    inventory,
                    format: Some(format),
                    saas: apps,
                    run_id: None,
                },
            )
            .await?;
            println!("{}", report.line());
            Ok(())
        }
    }
}

/// Writes the Redis inventory of `apps` to `snapshot`, unless it exists: an
/// existing snapshot is the one a stopped run was publishing, kept so the
/// run resumes at its offset.
async fn write_snapshot(
    settings: &Settings,
    apps: &[String],
    snapshot: &std::path::Path,
) -> anyhow::Result<()> {
    if snapshot.exists() {
        return Ok(());
    }
    let partial = snapshot.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    sor::export(
        &store(settings).await?,
        apps,
        &mut std::io::BufWriter::new(file),
    )
    .await?;
    std::fs::rename(&partial, snapshot)?;
    Ok(())
}
