use super::*;

#[test]
fn placeholder_crds_generate() {
    assert_eq!(crds().len(), 9);
}
