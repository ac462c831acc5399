use baton_core::definition::Format;
use baton_core::engine::{apply, Command, Event, Execution, TaskRef};
use baton_core::Workflow;
use serde_json::json;

#[test]
fn order_saga_happy_path() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../workflows/order-saga.yaml")).unwrap();
    let wf = Workflow::from_text(&text, Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut ex = Execution::new(&wf, "ex-1");
    let mut t = apply(&wf, &mut ex, Event::Started { input: json!({"orderId": "o-1"}) }, 1000);
    let mut now = 1000;
    loop {
        let dispatches: Vec<_> = t.commands.iter().filter_map(|c| match c { Command::Dispatch(d) => Some(d.clone()), _ => None }).collect();
        if let Some(Command::Finish { status, output, .. }) = t.commands.iter().find(|c| matches!(c, Command::Finish { .. })) {
            println!("{status:?} {output:?}");
            assert_eq!(output.as_ref().unwrap()["trackingNumber"], json!("T-1"));
            break;
        }
        assert_eq!(dispatches.len(), 1, "{:?}", t.commands);
        let d = &dispatches[0];
        let out = match &*d.function {
            "validate-order" => json!({"valid": true, "items": [1], "total": 5}),
            "reserve-inventory" => json!({"reservationId": "r-1"}),
            "process-payment" => json!({"paymentId": "p-1"}),
            "ship-order" => json!({"shipmentId": "s-1", "trackingNumber": "T-1"}),
            _ => json!({}),
        };
        now += 10;
        t = apply(&wf, &mut ex, Event::TaskSucceeded { task: TaskRef { ..d.task.clone() }, output: out }, now);
    }
}
