//! Runs the `live_count` example on the embedded default (memory cache + SQLite file).

#[tokio::main]
async fn main() -> counters::Result<()> {
    let (cache, store) = examples::embedded_default("live_count").await?;
    examples::live_count::run(cache, store).await?;
    Ok(())
}
