//! The local stack: every function's router on one HTTPS port (exactly the template's routes,
//! checked at start), deviceconnect's routes on the same port with a `nats-server` child
//! ([`nats`]), the queue consumers in the same process, the tables, queues and
//! bucket created on the emulators from `infra/template.yaml`, and optionally the official Mender
//! web GUI under `/ui/` ([`gui`], `MENDER_GUI_DIR`). Used by `make run` (binary `mender-local`) and by the black-box tests,
//! which start one stack per test with its own resource prefix.

pub mod consumers;
pub mod gui;
pub mod nats;
pub mod resources;
pub mod template;
pub mod tls;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::Router;
use mender_config::Config;
use mender_http::Route;
use mender_tokens::Keys;
use services::Services;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use workflows::{Queue, SqsPublisher};

pub use resources::Created;

/// The template the stack is built from.
pub fn default_template() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/template.yaml"
    ))
}

#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    /// Certificates and the JWT key live here.
    pub state_dir: PathBuf,
    /// Prepended to every table, queue and bucket name.
    pub prefix: String,
    pub template: PathBuf,
    /// First admin user, created when missing.
    pub admin: Option<(String, String)>,
    pub bcrypt_cost: u32,
}

/// An API function crate (`functions/<name>`): its route list and its router.
pub struct ApiFunction {
    pub name: &'static str,
    pub routes: fn() -> Vec<Route<Services>>,
    pub router: fn(Services) -> Router,
}

/// Every API function; the local server merges their routers.
pub const API_FUNCTIONS: &[ApiFunction] = &[
    ApiFunction {
        name: "useradm-management",
        routes: useradm_management::routes,
        router: useradm_management::router,
    },
    ApiFunction {
        name: "deviceauth-devices",
        routes: deviceauth_devices::routes,
        router: deviceauth_devices::router,
    },
    ApiFunction {
        name: "deviceauth-management",
        routes: deviceauth_management::routes,
        router: deviceauth_management::router,
    },
    ApiFunction {
        name: "inventory-devices",
        routes: inventory_devices::routes,
        router: inventory_devices::router,
    },
    ApiFunction {
        name: "inventory-management",
        routes: inventory_management::routes,
        router: inventory_management::router,
    },
    ApiFunction {
        name: "deployments-management",
        routes: deployments_management::routes,
        router: deployments_management::router,
    },
    ApiFunction {
        name: "deployments-devices",
        routes: deployments_devices::routes,
        router: deployments_devices::router,
    },
    ApiFunction {
        name: "deviceconfig-devices",
        routes: deviceconfig_devices::routes,
        router: deviceconfig_devices::router,
    },
    ApiFunction {
        name: "deviceconfig-management",
        routes: deviceconfig_management::routes,
        router: deviceconfig_management::router,
    },
    ApiFunction {
        name: "iot-manager-management",
        routes: iot_manager_management::routes,
        router: iot_manager_management::router,
    },
];

/// Every workflow step: its crate (`functions/<name>`, named after the queue) and the queue it
/// consumes ([`consumers::process`] runs it).
pub fn workflow_functions() -> Vec<(&'static str, Queue)> {
    Queue::ALL.iter().map(|q| (q.name(), *q)).collect()
}

/// Every `(METHOD, path)` the API functions serve.
pub fn served_routes() -> BTreeSet<(String, String)> {
    API_FUNCTIONS
        .iter()
        .flat_map(|f| mender_http::routes::signatures(&(f.routes)()))
        .collect()
}

/// The local server must serve exactly the template's `HttpApi` routes, as API Gateway does.
pub fn check_routes(resources: &template::Resources) -> anyhow::Result<()> {
    let template = resources.http_routes();
    let served = served_routes();
    let show = |set: Vec<&(String, String)>| {
        set.iter()
            .map(|(m, p)| format!("{m} {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing: Vec<_> = template.difference(&served).collect();
    let extra: Vec<_> = served.difference(&template).collect();
    if !missing.is_empty() || !extra.is_empty() {
        bail!(
            "routes differ between infra/template.yaml and the functions' routes(): \
             in the template but served by no function: [{}]; served but not in the template: [{}]",
            show(missing),
            show(extra)
        );
    }
    Ok(())
}

/// Every router of every API function, with the common layers. Route conflicts between
/// functions panic here, at start, never at request time.
pub fn app(services: Services) -> Router {
    mender_http::finish(api_routers(services))
}

fn api_routers(services: Services) -> Router {
    API_FUNCTIONS.iter().fold(Router::new(), |router, f| {
        router.merge((f.router)(services.clone()))
    })
}

/// [`app`] plus deviceconnect's client routes: the container service of the template (not an
/// `HttpApi` function), served on the same origin locally; its `/api/internal/...` routes are
/// not (in AWS only the VPC reaches them).
pub fn app_with_deviceconnect(services: Services, dc: deviceconnect::Deviceconnect) -> Router {
    local_app(services, dc, None)
}

/// [`app_with_deviceconnect`] plus the web GUI under `/ui/` when there is one.
pub fn local_app(
    services: Services,
    dc: deviceconnect::Deviceconnect,
    gui: Option<&gui::Gui>,
) -> Router {
    finish_local(
        api_routers(services).merge(deviceconnect::public_router(dc)),
        gui,
    )
}

/// The API routes, the GUI's routes when there is a GUI (they share no path, so the API keeps
/// its routes), then the common layers and Mender's 404/405 bodies for everything else. The
/// local server streams bodies where API Gateway buffers them, so refused bodies are drained
/// ([`mender_http::drain`]).
pub fn finish_local(api: Router, gui: Option<&gui::Gui>) -> Router {
    mender_http::finish(gui::mount(api, gui)).layer(axum::middleware::from_fn(
        mender_http::drain::drain_refused_bodies,
    ))
}

/// What the stack is made of: SDK clients, created resources and the services.
pub struct Parts {
    pub services: Services,
    /// What the template describes.
    pub resources: template::Resources,
    pub created: Created,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
}

/// The JWT key of the local stack, generated on first run.
fn jwt_key(state_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = state_dir.join("jwt-private.pem");
    if let Ok(pem) = std::fs::read_to_string(&path) {
        return Ok(pem);
    }
    std::fs::create_dir_all(state_dir)?;
    let pem = Keys::generate_rsa_pem()?;
    std::fs::write(&path, &pem)?;
    Ok(pem)
}

/// Connects to the emulators, creates what the template describes and builds the services.
pub async fn prepare(options: &Options) -> anyhow::Result<Parts> {
    let sdk = mender_aws::load_sdk_config().await;
    let dynamodb = mender_aws::dynamodb(&sdk);
    let sqs = mender_aws::sqs(&sdk);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let resources = template::load(&options.template)?;
    let created = resources::create(&resources, &options.prefix, &dynamodb, &sqs, &s3).await?;
    let mut config = Config::with_resources(
        [
            created.table("DeviceauthTable")?,
            created.table("UseradmTable")?,
            created.table("InventoryTable")?,
        ],
        created.queue_urls()?,
        jwt_key(&options.state_dir)?,
    );
    config.bcrypt_cost = options.bcrypt_cost;
    let publisher = Arc::new(SqsPublisher {
        client: sqs.clone(),
        urls: config.queues.clone(),
    });
    config.deployments_table = created
        .tables
        .get("DeploymentsTable")
        .cloned()
        .unwrap_or_default();
    config.deviceconnect_table = created.table("DeviceconnectTable")?.to_owned();
    config.deviceconfig_table = created.table("DeviceconfigTable")?.to_owned();
    config.artifacts_bucket = created
        .buckets
        .get("ArtifactsBucket")
        .cloned()
        .unwrap_or_default();
    let storage = mender_aws::s3::ArtifactStorage::new(&sdk, &config.artifacts_bucket);
    let mut services = Services::with_parts(config, dynamodb.clone(), storage, publisher)?;
    services.iot_manager = iot_manager::IotManager::new(
        dynamodb.clone(),
        local_iot_manager_settings(options, &created)?,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Parts {
        services,
        resources,
        created,
        dynamodb,
        sqs,
        s3,
    })
}

/// iot-manager locally: webhooks and IoT Hub on this machine are allowed (loopback is refused
/// in AWS), the local hostnames are trusted IoT Hub hosts, outbound HTTPS trusts the local CA
/// (a test's IoT Hub serves the stack's certificate), and retries are quick.
fn local_iot_manager_settings(
    options: &Options,
    created: &Created,
) -> anyhow::Result<iot_manager::Settings> {
    let certs = tls::ensure(&options.state_dir.join("tls"))?;
    let mut settings = iot_manager::Settings {
        table: created.table("IotManagerTable")?.to_owned(),
        policy: iot_manager::net::AddressPolicy::parse("127.0.0.0/8,::1")
            .map_err(anyhow::Error::msg)?,
        extra_root_pem: Some(std::fs::read_to_string(&certs.ca_cert)?),
        ..iot_manager::Settings::default()
    };
    settings
        .trusted_domains
        .extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
    settings.retry.backoff = std::time::Duration::from_millis(200);
    Ok(settings)
}

/// Creates the admin user when missing; returns whether it was created.
pub async fn ensure_admin(services: &Services, admin: &(String, String)) -> anyhow::Result<bool> {
    services
        .useradm
        .ensure_user("", &admin.0, &admin.1)
        .await
        .context("creating the admin user")
}

/// A running stack. Dropping it does not stop it: call [`Stack::stop`].
pub struct Stack {
    pub url: String,
    pub port: u16,
    pub ca_cert: PathBuf,
    pub services: Services,
    pub created: Created,
    /// The local NATS server (`nats://127.0.0.1:<port>`) deviceconnect relays through.
    pub nats_url: String,
    /// This stack's deviceconnect instance (tests build more instances from its parts).
    pub deviceconnect: deviceconnect::Deviceconnect,
    /// Where the web GUI is served (`https://localhost:<port>/ui/`), when it is.
    pub gui_url: Option<String>,
    nats: nats::NatsServer,
    stop: watch::Sender<bool>,
    server: axum_server::Handle<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    pub async fn start(options: Options) -> anyhow::Result<Stack> {
        Stack::start_with_gui(options, None).await
    }

    /// [`Stack::start`], also serving `gui` under `/ui/` (`mender-local serve` with
    /// `MENDER_GUI_DIR`).
    pub async fn start_with_gui(options: Options, gui: Option<gui::Gui>) -> anyhow::Result<Stack> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let parts = prepare(&options).await?;
        check_routes(&parts.resources)?;
        if let Some(admin) = &options.admin {
            ensure_admin(&parts.services, admin).await?;
        }
        let certs = tls::ensure(&options.state_dir.join("tls"))?;
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(
            &certs.server_cert,
            &certs.server_key,
        )
        .await?;
        let listener = std::net::TcpListener::bind(options.listen)
            .with_context(|| format!("binding {}", options.listen))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
        let nats = nats::NatsServer::start().await?;
        let dc =
            match deviceconnect::Deviceconnect::connect(parts.services.clone(), &nats.url).await {
                Ok(dc) => dc,
                Err(e) => {
                    nats.stop().await;
                    bail!("starting deviceconnect: {e}");
                }
            };
        let app = local_app(parts.services.clone(), dc.clone(), gui.as_ref());
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::error!(error = %e, "server stopped");
            }
        })];
        let (stop, stopped) = watch::channel(false);
        let urls = parts.created.queue_urls()?;
        for queue in Queue::ALL {
            let url = queue.url(&urls).to_owned();
            tasks.push(tokio::spawn(consumers::run(
                queue,
                url,
                parts.sqs.clone(),
                parts.services.clone(),
                stopped.clone(),
            )));
        }
        Ok(Stack {
            url: format!("https://localhost:{port}"),
            port,
            ca_cert: certs.ca_cert,
            services: parts.services,
            created: parts.created,
            nats_url: nats.url.clone(),
            deviceconnect: dc,
            gui_url: gui.map(|_| format!("https://localhost:{port}{}", gui::GUI_PATH)),
            nats,
            stop,
            server: handle,
            tasks,
        })
    }

    /// Stops the server and the consumers and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.server
            .graceful_shutdown(Some(std::time::Duration::from_secs(2)));
        for task in self.tasks {
            let _ = task.await;
        }
        self.nats.stop().await;
    }
}
