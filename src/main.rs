use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = callingest::cli::Cli::parse();
    match callingest::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
