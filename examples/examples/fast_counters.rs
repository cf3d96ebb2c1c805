//! Runs the `fast_counters` example on the embedded default (memory cache + SQLite file).

#[tokio::main]
async fn main() -> counters::Result<()> {
    let (cache, store) = examples::embedded_default("fast_counters").await?;
    examples::fast_counters::run(cache, store).await?;
    Ok(())
}
