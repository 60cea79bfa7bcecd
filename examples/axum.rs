//! axum: an HTTP handler writes the order and its event in ONE transaction; the relay and
//! inbox workers run beside the server, and one `CancellationToken` shuts all three down
//! (the server stops accepting, the workers drain, then everything returns).
//!
//! 1. migrate a fresh schema, declare a RabbitMQ queue;
//! 2. start the relay worker, the inbox worker and the axum server on 127.0.0.1:0;
//! 3. `POST /orders` twice over real HTTP: each request commits an order row and its typed
//!    `OrderPlaced` event together; a request with a bad body gets a 422 and writes nothing;
//! 4. wait until the inbox credited both orders once;
//! 5. cancel the token: server, relay and inbox stop; drop the schema and the queue.
//!
//! Run: `cargo run -p omnibox-examples --example axum`
//! (DATABASE_URL and AMQP_URL default to the local services).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use omnibox::postgres::sqlx::{self, AssertSqlSafe, PgPool};
use omnibox::postgres::{PgDatabase, PgOutboxStore};
use omnibox::prelude::*;
use omnibox::rabbitmq::RabbitConsumer;
use omnibox::rabbitmq::RabbitPublisher;
use omnibox_examples::{CreditLoyaltyPoints, Demo, OrderPlaced, Result, rabbit, unique_name};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the HTTP handler needs: the pool, the outbox, the schema and the queue.
#[derive(Clone)]
struct App {
    pool: PgPool,
    outbox: PgOutboxStore,
    schema: String,
    queue: String,
}

#[derive(Deserialize)]
struct PlaceOrder {
    customer: String,
    total: i32,
}

/// `POST /orders`: the order row and its event commit in one transaction, or neither does.
async fn place_order(
    State(app): State<App>,
    Json(req): Json<PlaceOrder>,
) -> std::result::Result<(StatusCode, String), (StatusCode, String)> {
    let internal = |e: &dyn std::fmt::Display| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let placed = OrderPlaced {
        order: uuid::Uuid::now_v7(),
        customer: req.customer,
        total: req.total,
    };
    let event = OutboxEvent::message(&placed)
        .topic(app.queue.as_str())
        .build()
        .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let mut tx = app.pool.begin().await.map_err(|e| internal(&e))?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {}.orders (id, customer, total) VALUES ($1, $2, $3)",
        app.schema
    )))
    .bind(placed.order)
    .bind(&placed.customer)
    .bind(placed.total)
    .execute(&mut *tx)
    .await
    .map_err(|e| internal(&e))?;
    app.outbox
        .enqueue(&mut tx, &event)
        .await
        .map_err(|e| internal(&e))?;
    tx.commit().await.map_err(|e| internal(&e))?;
    Ok((StatusCode::CREATED, placed.order.to_string()))
}

#[tokio::main]
async fn main() -> Result {
    let demo = Demo::connect("axum_example", |c| c).await?;
    let conn = match rabbit::connect().await {
        Ok(c) => c,
        Err(e) => {
            demo.cleanup().await;
            return Err(e);
        }
    };
    let queue = unique_name("axum_orders");
    let result = run(&demo, &conn, &queue).await;
    rabbit::delete_queue(&conn, &queue).await;
    demo.cleanup().await;
    let _ = conn.close(200, "bye".into()).await;
    if result.is_ok() {
        println!("axum example finished: two orders over HTTP, credited once each, one shutdown");
    }
    result
}

async fn run(demo: &Demo, conn: &omnibox::rabbitmq::lapin::Connection, queue: &str) -> Result {
    rabbit::declare_queue(conn, queue).await?;
    println!(
        "1. migrated schema {} and declared queue {queue}",
        demo.schema
    );

    // 2. Relay, inbox and HTTP server under one token.
    let db = PgDatabase::new(demo.pool.clone());
    let relay = OutboxRelay::builder(
        demo.outbox.clone(),
        RabbitPublisher::new(rabbit::connector("axum-relay")),
    )
    .worker(db.clone())
    .poll_interval(Duration::from_millis(100))
    .build()?;
    let consumer = RabbitConsumer::new(rabbit::connector("axum-inbox"), queue);
    let inbox = InboxRunner::builder(consumer, db, demo.inbox.clone(), "loyalty")
        .handler(CreditLoyaltyPoints {
            schema: demo.schema.clone(),
        })
        .idle_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .worker()
        .build()?;
    let token = CancellationToken::new();
    let relayed = tokio::spawn(relay.serve(token.clone()));
    let consumed = tokio::spawn(inbox.serve(token.clone()));
    let app = App {
        pool: demo.pool.clone(),
        outbox: demo.outbox.clone(),
        schema: demo.schema.clone(),
        queue: queue.to_owned(),
    };
    let router = Router::new()
        .route("/orders", post(place_order))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future(),
    );
    println!("2. relay worker, inbox worker and HTTP server on http://{addr} started");

    // 3. Real HTTP requests.
    for (customer, total) in [("customer-1", 30), ("customer-2", 12)] {
        let body = format!(r#"{{"customer":"{customer}","total":{total}}}"#);
        let (status, reply) = post_json(addr, "/orders", &body).await?;
        println!("3. POST /orders {body} → {status} {reply}");
        if status != 201 {
            return Err(format!("expected 201, got {status}: {reply}").into());
        }
    }
    let (status, _) = post_json(addr, "/orders", r#"{"customer":"c","total":"many"}"#).await?;
    println!("   POST /orders with a bad body → {status} (nothing written)");
    if status != 422 {
        return Err(format!("expected 422 for a bad body, got {status}").into());
    }
    if demo.count("outbox_events", "").await? != 2 || demo.count("orders", "").await? != 2 {
        return Err("expected exactly two orders and two events".into());
    }

    // 4. Relayed through RabbitMQ and credited by the inbox handler.
    omnibox_examples::wait_until("both orders credited", async || {
        Ok(demo.count("loyalty_credits", "times = 1").await? == 2)
    })
    .await?;
    for (customer, points, times) in demo.credits().await? {
        println!("4. loyalty credit: {customer} +{points} points, handler ran {times} time(s)");
    }

    // 5. One shutdown for the whole service.
    token.cancel();
    omnibox_examples::within("HTTP server stop", server).await???;
    let summary = omnibox_examples::within("relay stop", relayed).await??;
    let stopped = omnibox_examples::within("inbox stop", consumed).await??;
    println!(
        "5. shut down: server stopped, relay {:?} (published {}), inbox {stopped:?}",
        summary.stopped, summary.published
    );
    if summary.published != 2 {
        return Err(format!("expected 2 published, got {}", summary.published).into());
    }
    Ok(())
}

/// A minimal HTTP/1.1 client: POST `body` as JSON, return the status and the body.
async fn post_json(addr: std::net::SocketAddr, path: &str, body: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let reply = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, reply))
}
