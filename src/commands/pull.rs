//! `vram-llm pull owner/repo[:QUANT]`: a model from the hub into the shared
//! cache (config::hub::fetch, as `serve -hf` downloads at startup).

use crate::cli::PullArgs;

pub async fn pull(args: &PullArgs) -> Result<(), String> {
    let path = crate::config::hub::fetch(&args.model, args.hf_file.as_deref(), args.offline).await?;
    println!("{}", path.display());
    Ok(())
}
