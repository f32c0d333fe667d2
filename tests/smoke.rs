mod support;
use support::*;

#[tokio::test]
async fn miss_then_hit_serves_the_origin_body() {
    let h = Harness::start().await;
    let (id, _) = first_container(&h.sim);
    let path = format!("/v1/content/{id}");
    let a = h.client.get(&path, &admin_key()).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.x_cache(), Some("MISS"));
    let b = h.client.get(&path, &admin_key()).await;
    assert_eq!(b.x_cache(), Some("HIT"));
    assert_eq!(a.json(), h.sim.container(id).unwrap());
    assert_eq!(b.body, a.body);
    h.stop().await;
}
