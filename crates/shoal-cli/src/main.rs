//! `shoal`: the command line of shoal. Talks to shoald over its unix socket; prints
//! docker-style tables, or JSON with `--format json`.

mod attach;
mod auth;
mod client;
mod commands;
mod format;
mod inspect;
mod mountspec;
mod opts;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{container, image, manage, network, service, swarm, system};

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A swarm-mode container orchestrator",
    disable_help_subcommand = true
)]
struct Cli {
    /// Daemon socket (unix:///path).
    #[arg(short = 'H', long = "host", env = "SHOAL_HOST", default_value = client::DEFAULT_HOST, global = true)]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create and start a container.
    #[command(disable_help_flag = true)]
    Run(container::RunArgs),
    /// Create a container without starting it.
    #[command(disable_help_flag = true)]
    Create(opts::CreateFlags),
    /// Start stopped containers.
    Start(container::StartArgs),
    /// Stop running containers (stop signal, then SIGKILL after the timeout).
    Stop(container::StopArgs),
    /// Restart containers.
    Restart(container::StopArgs),
    /// Send a signal to running containers (default SIGKILL).
    Kill(container::KillArgs),
    /// Remove containers.
    Rm(container::RmArgs),
    /// List containers.
    Ps(container::PsArgs),
    /// Show low-level information on containers or images (JSON).
    Inspect(container::InspectArgs),
    /// Fetch the logs of a container.
    Logs(container::LogsArgs),
    /// Block until containers stop, then print their exit codes.
    Wait(container::WaitArgs),
    /// Run a command in a running container.
    Exec(manage::ExecArgs),
    /// Show the processes of a container.
    Top(manage::TopArgs),
    /// Live resource usage of containers.
    Stats(manage::StatsArgs),
    /// Freeze all processes of containers.
    Pause(manage::NamesArgs),
    /// Thaw paused containers.
    Unpause(manage::NamesArgs),
    /// Rename a container.
    Rename(manage::RenameArgs),
    /// Change resources or the restart policy of containers.
    Update(manage::UpdateArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(system::VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// List a container's published ports.
    Port(network::PortArgs),
    /// Manage the swarm.
    #[command(subcommand)]
    Swarm(swarm::SwarmCommand),
    /// Manage the swarm's nodes.
    #[command(subcommand)]
    Node(swarm::NodeCommand),
    /// Manage services.
    #[command(subcommand, alias = "svc")]
    Service(service::ServiceCommand),
    /// Manage shoal itself: prune, df, events.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Stream events (create, start, die, oom, health_status, ...).
    Events(system::EventsArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// List images.
    Images(commands::ListArgs),
    /// Load images from a tar archive or stdin.
    Load(image::LoadArgs),
    /// Pull an image from a registry.
    Pull(image::PullArgs),
    /// Push an image to a registry, or to the swarm (a name without a registry).
    Push(image::PushArgs),
    /// Log in to a registry (the credentials are kept for this user, 0600).
    Login(image::LoginArgs),
    /// Log out from a registry.
    Logout(image::LogoutArgs),
    /// Save images to a tar archive (stdout by default).
    Save(image::SaveArgs),
    /// Remove images.
    Rmi(image::RmArgs),
    /// Tag an image.
    Tag(image::TagArgs),
    /// Show the client and daemon versions.
    Version(commands::VersionArgs),
    /// Show the daemon, its containers and images, and the swarm.
    Info,
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// Remove all stopped containers.
    Prune(manage::PruneArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(run(cli));
    ExitCode::from(code.clamp(0, 255) as u8)
}

async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Version(a) => commands::version(&cli.host, a).await,
        Command::Info => commands::info(&cli.host).await,
        Command::Run(a) => container::run(&cli.host, a).await,
        Command::Create(a) => container::create(&cli.host, a).await,
        Command::Start(a) => container::start(&cli.host, a).await,
        Command::Stop(a) => container::stop(&cli.host, a, false).await,
        Command::Restart(a) => container::stop(&cli.host, a, true).await,
        Command::Kill(a) => container::kill(&cli.host, a).await,
        Command::Rm(a) => container::rm(&cli.host, a).await,
        Command::Ps(a) => container::ps(&cli.host, a).await,
        Command::Inspect(a) => container::inspect(&cli.host, a).await,
        Command::Logs(a) => container::logs(&cli.host, a).await,
        Command::Wait(a) => container::wait(&cli.host, a).await,
        Command::Exec(a) => manage::exec(&cli.host, a).await,
        Command::Top(a) => manage::top(&cli.host, a).await,
        Command::Stats(a) => manage::stats(&cli.host, a).await,
        Command::Pause(a) => manage::pause(&cli.host, a, false).await,
        Command::Unpause(a) => manage::pause(&cli.host, a, true).await,
        Command::Rename(a) => manage::rename(&cli.host, a).await,
        Command::Update(a) => manage::update(&cli.host, a).await,
        Command::Container(ContainerCommand::Prune(a)) => {
            manage::container_prune(&cli.host, a).await
        }
        Command::Volume(c) => system::volume(&cli.host, c).await,
        Command::Network(c) => network::dispatch(&cli.host, c).await,
        Command::Port(a) => network::port(&cli.host, a).await,
        Command::Swarm(c) => swarm::swarm(&cli.host, c).await,
        Command::Node(c) => swarm::node(&cli.host, c).await,
        Command::Service(c) => service::dispatch(&cli.host, c).await,
        Command::System(c) => system::dispatch(&cli.host, c).await,
        Command::Events(a) => system::events(&cli.host, a).await,
        Command::Image(c) => image::dispatch(&cli.host, c).await,
        Command::Images(a) => image::ls(&cli.host, a).await,
        Command::Load(a) => image::load(&cli.host, a).await,
        Command::Pull(a) => image::pull(&cli.host, a).await,
        Command::Push(a) => image::push(&cli.host, a).await,
        Command::Login(a) => image::login(&cli.host, a).await,
        Command::Logout(a) => image::logout(a).await,
        Command::Save(a) => image::save(&cli.host, a).await,
        Command::Rmi(a) => image::rm(&cli.host, a).await,
        Command::Tag(a) => image::tag(&cli.host, a).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod cli_tests {
    /// clap checks its definitions (unique ids, flag names) only when a command is built:
    /// every subcommand, at once.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
