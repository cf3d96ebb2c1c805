//! Runs the `time_series` example on the embedded default (memory cache + SQLite file).

#[tokio::main]
async fn main() -> counters::Result<()> {
    let (cache, store) = examples::embedded_default("time_series").await?;
    examples::time_series::run(cache, store).await?;
    Ok(())
}
