//! The PrivateDnsName fallback against moto's EC2, through the same signed Query API call
//! production makes.

use quiesce_aws::ec2::Ec2;
use quiesce_aws::sdk::{AwsOptions, sdk_config};
use quiesce_testbed::moto::Moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_private_dns_name_of_a_group_instance() {
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .unwrap()
        .expect("moto starts (scripts/test --setup installs it in the venv)");
    let config = sdk_config(&AwsOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.url().to_string()),
    })
    .await
    .into_builder()
    .credentials_provider(aws_sdk_autoscaling::config::SharedCredentialsProvider::new(
        aws_sdk_autoscaling::config::Credentials::new("testing", "testing", None, None, "test"),
    ))
    .build();
    let asg = aws_sdk_autoscaling::Client::new(&config);
    asg.create_launch_configuration()
        .launch_configuration_name("lc")
        .image_id("ami-12c6146b")
        .instance_type("t3.medium")
        .send()
        .await
        .unwrap();
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("g")
        .launch_configuration_name("lc")
        .min_size(1)
        .max_size(1)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();
    let groups = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("g")
        .send()
        .await
        .unwrap();
    let instance = groups.auto_scaling_groups()[0].instances()[0]
        .instance_id()
        .unwrap()
        .to_string();

    let ec2 = Ec2::new(&config).unwrap();
    let name = ec2.private_dns_name(&instance).await.unwrap();
    let name = name.expect("moto knows the instance");
    assert!(
        name.starts_with("ip-") && name.ends_with(".internal"),
        "{name}"
    );
    assert_eq!(
        ec2.private_dns_name("i-0123456789abcdef0").await.unwrap(),
        None,
        "an unknown instance is no error"
    );
}
