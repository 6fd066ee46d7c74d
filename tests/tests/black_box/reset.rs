//! `make reset` (`mender-local reset`, `local_stack::resources::empty`) can run twice in a row:
//! queues are drained message by message (SQS refuses a second `PurgeQueue` within 60 s) and
//! tables and bucket end empty each time.

use black_box_tests::tempdir::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_twice_in_a_row_empties_everything() -> anyhow::Result<()> {
    let state = TempDir::new("reset")?;
    let options = local_stack::Options {
        listen: "127.0.0.1:0".parse()?,
        state_dir: state.path().to_path_buf(),
        prefix: format!("reset{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: local_stack::default_template(),
        admin: None,
        bcrypt_cost: 4,
    };
    let parts = local_stack::prepare(&options).await?;
    for round in 0..2 {
        parts
            .services
            .useradm
            .create_user("", &format!("reset{round}@example.com"), "reset-password-1")
            .await?;
        let queue = &parts.services.config.queues.update_device_status;
        parts
            .sqs
            .send_message()
            .queue_url(queue)
            .message_body("{}")
            .message_group_id("reset")
            .message_deduplication_id(format!("reset-{round}"))
            .send()
            .await?;
        local_stack::resources::empty(&parts.created, &parts.dynamodb, &parts.sqs, &parts.s3)
            .await?;
        let left = parts
            .sqs
            .receive_message()
            .queue_url(queue)
            .send()
            .await?
            .messages
            .unwrap_or_default();
        assert!(left.is_empty(), "round {round}: {left:?}");
        let users = parts
            .dynamodb
            .scan()
            .table_name(&parts.services.config.useradm_table)
            .send()
            .await?;
        assert_eq!(users.count, 0, "round {round}");
    }
    Ok(())
}
