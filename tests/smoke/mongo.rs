use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Client, IndexModel};
use switchyard_tests::{endpoint, unique};

#[tokio::test]
async fn insert_find_and_unique_index() {
    let client = Client::with_uri_str(endpoint("SWITCHYARD_MONGO_URI"))
        .await
        .unwrap();
    let database = client.database(&unique("smoke").replace('-', "_"));
    let results = database.collection::<Document>("results");

    results
        .create_index(
            IndexModel::builder()
                .keys(doc! { "job_id": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
    results
        .insert_one(doc! { "job_id": "01JDQ3Z4W5X6Y7Z8A9B0C1D2E3", "status": "succeeded", "cost_micros": 615_i64 })
        .await
        .unwrap();

    let found = results
        .find_one(doc! { "job_id": "01JDQ3Z4W5X6Y7Z8A9B0C1D2E3" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.get_str("status").unwrap(), "succeeded");
    assert_eq!(found.get_i64("cost_micros").unwrap(), 615);

    // What makes result writes idempotent: a second insert of the same job is refused.
    let duplicate = results
        .insert_one(doc! { "job_id": "01JDQ3Z4W5X6Y7Z8A9B0C1D2E3", "status": "failed" })
        .await
        .unwrap_err();
    assert!(duplicate.to_string().contains("E11000"), "{duplicate}");

    database.drop().await.unwrap();
}
