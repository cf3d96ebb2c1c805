//! Runs the `distributed_counter` example on the embedded default (memory cache + SQLite file).

#[tokio::main]
async fn main() -> counters::Result<()> {
    let (cache, store) = examples::embedded_default("distributed_counter").await?;
    examples::distributed_counter::run(cache, store).await?;
    Ok(())
}
