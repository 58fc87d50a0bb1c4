//! Embedding shoal-core: start a node, optionally join one, print member events.
//!
//! ```text
//! cargo run -p shoal-core --example embed -- 127.0.0.1:0
//! cargo run -p shoal-core --example embed -- 127.0.0.1:0 127.0.0.1:PORT_OF_THE_FIRST
//! ```

use std::net::SocketAddr;

use shoal_core::{Event, NodeConfig, Profile};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bind: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()?;
    let mut config = NodeConfig::new(format!("embed-{}", std::process::id()), bind);
    config.profile = Profile::Local;
    config.join = args.collect();
    let (node, mut events) = shoal_core::start(config).await?;
    println!("listening on {}", node.local_addr());
    loop {
        tokio::select! {
            Some(Event::Member { kind, member }) = events.recv() => {
                println!("{} {} {} {:?}", kind.as_str(), member.name, member.addr, member.status);
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    node.leave().await?;
    node.shutdown().await;
    Ok(())
}
