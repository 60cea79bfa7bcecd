//! Observability: the relay and the inbox with Prometheus metrics and OpenTelemetry traces.
//!
//! - Metrics: `omnibox::metrics::install_prometheus` serves `/metrics` (127.0.0.1:9464, or a
//!   free port when that one is taken); `FacadeMetrics` is the relay's and inbox's sink.
//! - Traces: the request span's context is stored with the event (`inject_current`), the
//!   relay's `OtelStep` opens `send` spans and the wrapped publisher puts their
//!   `traceparent` on the message, the inbox's traced handler continues the same trace.
//!   Spans go to OTLP/HTTP at `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. an OpenTelemetry
//!   Collector on `http://127.0.0.1:4318`); when it is unset, the example runs a stand-in
//!   OTLP receiver on loopback that only counts what it receives. They are also kept in the
//!   SDK's in-memory exporter and printed.
//!
//! The example scrapes its own endpoint once, prints a few series and exits.
//!
//! Run: `cargo run -p omnibox-examples --example observability` (DATABASE_URL, AMQP_URL).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use omnibox::inbox::InboxRunner;
use omnibox::metrics::FacadeMetrics;
use omnibox::otel::{OtelStep, inject_current};
use omnibox::postgres::PgDatabase;
use omnibox::rabbitmq::lapin::Connection;
use omnibox::rabbitmq::{PublisherOptions, RabbitConsumer, RabbitPublisher, RoutingMode};
use omnibox::relay::OutboxRelay;
use omnibox::{OutboxEvent, Shutdown, WorkerId};
use omnibox_examples::{
    CreditLoyaltyPoints, Demo, OrderPlaced, Result, rabbit, unique_name, within,
};
use opentelemetry::trace::{TraceContextExt, Tracer};
use opentelemetry::{Context, global};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result {
    // Prometheus: 9464 (the conventional exporter port) when free, else any free port.
    let listen = free_port(9464).await?;
    omnibox::metrics::install_prometheus(listen)?;
    println!("1. Prometheus metrics: http://{listen}/metrics");

    // OpenTelemetry: OTLP/HTTP (to the configured endpoint or a stand-in) + in-memory.
    let received = Arc::new(AtomicUsize::new(0));
    let endpoint = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => e.trim_end_matches('/').to_owned(),
        _ => stand_in_otlp_receiver(received.clone()).await?,
    };
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_timeout(Duration::from_secs(3))
        .with_headers(Default::default())
        .build()?;
    let memory = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(memory.clone())
        .with_batch_exporter(otlp)
        .build();
    global::set_tracer_provider(provider.clone());
    println!("   spans: OTLP/HTTP to {endpoint}/v1/traces (and an in-memory copy printed below)");

    let demo = Demo::connect("observability", |c| c).await?;
    let conn = match rabbit::connect().await {
        Ok(c) => c,
        Err(e) => {
            demo.cleanup().await;
            return Err(e);
        }
    };
    let queue = unique_name("observability_orders");
    let result = run(&demo, &conn, &queue, listen).await;
    rabbit::delete_queue(&conn, &queue).await;
    demo.cleanup().await;
    let _ = conn.close(200, "bye".into()).await;

    // Flush the batch exporter, show the trace, shut the provider down.
    let flushing = provider.clone();
    let flushed = tokio::task::spawn_blocking(move || flushing.force_flush()).await?;
    let spans = memory.get_finished_spans()?;
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await?;
    println!("4. {} spans recorded:", spans.len());
    for s in &spans {
        println!(
            "   {:<28} trace {} span {} parent {}",
            s.name,
            s.span_context.trace_id(),
            s.span_context.span_id(),
            s.parent_span_id
        );
    }
    match flushed {
        Ok(()) if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok() => {
            println!("   OTLP export to {endpoint} flushed")
        }
        Ok(()) => println!(
            "   stand-in OTLP receiver got {} export request(s)",
            received.load(Ordering::SeqCst)
        ),
        Err(e) => eprintln!("   OTLP export failed: {e}"),
    }
    if result.is_ok() {
        println!("observability example finished");
    }
    result
}

async fn run(demo: &Demo, conn: &Connection, queue: &str, listen: SocketAddr) -> Result {
    rabbit::declare_queue(conn, queue).await?;
    let metrics = Arc::new(FacadeMetrics::new());
    let otel = OtelStep::new().messaging_system("rabbitmq");

    // 2. A request span: its context is stored with the event, in the business transaction.
    let request = global::tracer("shop").start("POST /orders");
    let request_cx = Context::current_with_span(request);
    let order = uuid::Uuid::now_v7();
    let event = {
        let _active = request_cx.clone().attach();
        inject_current(
            OutboxEvent::message(&OrderPlaced {
                order,
                customer: "customer-7".into(),
                total: 42,
            })
            .topic(queue),
        )
        .build()?
    };
    demo.place_order_with(order, "customer-7", 42, &event, true)
        .await?;
    request_cx.span().end();
    println!(
        "2. order committed with traceparent {}",
        event
            .common
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map_or("-", |v| v.as_str())
    );

    // Relay: OtelStep first, the publisher wrapped so the message carries the send span.
    let publisher = RabbitPublisher::new(rabbit::connect().await?).with_options(
        PublisherOptions::default().routing(RoutingMode::FixedExchange(String::new())),
    );
    let relay = OutboxRelay::builder(demo.outbox.clone(), otel.publisher(publisher))
        .step_before(otel.clone())
        .metrics(metrics.clone())
        .job_name("orders_relay")
        .publish_timeout(Duration::from_secs(5))
        .lease_ttl(Duration::from_secs(60))
        .build()?;
    let db = PgDatabase::new(demo.pool.clone());
    let r = relay
        .publish_batch(&db, &WorkerId::generate("relay")?, &Shutdown::new())
        .await?;
    println!("   relay published {} event(s)", r.completed.len());

    // Inbox: the traced handler continues the trace carried by the message headers.
    let mut runner = InboxRunner::builder(
        RabbitConsumer::new(rabbit::connect().await?, queue),
        db,
        demo.inbox.clone(),
        "loyalty",
    )
    .handler(otel.handler(CreditLoyaltyPoints {
        schema: demo.schema.clone(),
    }))
    .metrics(metrics)
    .job_name("loyalty_inbox")
    .build()?;
    let outcome = within("the message", runner.process_one()).await??;
    within("stopping the consumer", runner.stop()).await??;
    println!("   inbox handled it: {}", outcome.handled);

    // 3. Scrape our own endpoint once, as Prometheus would.
    let body = within("scraping /metrics", scrape(listen)).await??;
    let series: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("omnibox_") && !l.contains("_bucket{"))
        .collect();
    println!(
        "3. scraped http://{listen}/metrics: {} omnibox series lines, e.g.",
        series.len()
    );
    for line in series.iter().take(8) {
        println!("   {line}");
    }
    if !series
        .iter()
        .any(|l| l.starts_with("omnibox_events_completed_total"))
    {
        return Err("omnibox_events_completed_total missing from /metrics".into());
    }
    Ok(())
}

/// `preferred` on loopback when it is free, else a free port the OS picks.
async fn free_port(preferred: u16) -> Result<SocketAddr> {
    let listener = match TcpListener::bind(("127.0.0.1", preferred)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind(("127.0.0.1", 0)).await?,
    };
    Ok(listener.local_addr()?)
}

/// A plain HTTP GET of `/metrics`.
async fn scrape(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// A minimal OTLP/HTTP receiver on loopback: answers `200 OK` to every request and counts
/// them. It stands in for a collector so the exporter has somewhere to send.
async fn stand_in_otlp_receiver(received: Arc<AtomicUsize>) -> Result<String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // Read one request: headers, then Content-Length bytes of body.
                    let Some(end) = find(&buf, b"\r\n\r\n") else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    received.fetch_add(1, Ordering::SeqCst);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(format!("http://{addr}"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
