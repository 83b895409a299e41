//! Wakes this process's drivers when another process makes a run claimable: a connection of its own `LISTEN`s on one channel, which submissions, answers and releases `NOTIFY`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

/// The channel a claimable run is announced on.
pub(super) const CHANNEL: &str = "corral_runs";

/// The statement that announces one, sent when its transaction commits.
pub(super) const NOTIFY: &str = "SELECT pg_notify('corral_runs', '')";

/// How long to wait before opening a lost listening connection again.
const RECONNECT: Duration = Duration::from_secs(1);

/// Listens until the store's runtime stops, reconnecting after a failure.
/// `notify` keeps one permit, so a notification that comes while nobody
/// waits is not lost; one is also given after each (re)connection, since
/// notifications sent while disconnected are.
pub(super) async fn run(config: tokio_postgres::Config, notify: Arc<Notify>, shown: String) {
    loop {
        if let Err(e) = listen(&config, &notify).await {
            tracing::warn!(db = %shown, error = %e, "the connection that listens for claimable runs failed; opening it again");
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn listen(
    config: &tokio_postgres::Config,
    notify: &Notify,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    // The connection is driven by polling it for messages; LISTEN's reply
    // arrives through it too, so the two run side by side.
    let messages = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => notify.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    };
    let subscribe = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        notify.notify_one();
        // Keeps the client, and with it the connection, open.
        std::future::pending::<Result<(), tokio_postgres::Error>>().await
    };
    tokio::select! {
        r = messages => r,
        r = subscribe => r,
    }
}
