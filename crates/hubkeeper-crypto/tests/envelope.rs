use hubkeeper_crypto::{
    generate_key_b64, open, open_string, seal, Aad, CryptoError, DataKey, ExposeSecret,
    MasterKeyring, Sealed, SecretKind, WrappedKey,
};

const INSTALLATION: &str = "0b8f3c1e-5d2a-5c3e-9f00-123456789abc";
const OTHER_INSTALLATION: &str = "7d1e2f3a-0000-5000-8000-000000000001";

fn key_b64(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn keyring(spec: &str, active: Option<&str>) -> MasterKeyring {
    MasterKeyring::parse(spec, active).expect("valid keyring")
}

fn one_key() -> MasterKeyring {
    keyring(&format!("k1:{}", key_b64(1)), None)
}

#[test]
fn seal_open_round_trip() {
    let dk = DataKey::generate();
    let aad = Aad::access_token(INSTALLATION);
    let sealed = seal(&dk, b"pat-na1-secret-access-token", &aad).expect("seal");
    let opened = open(&dk, &sealed, &aad).expect("open");
    assert_eq!(opened.expose_secret(), b"pat-na1-secret-access-token");
    let text = open_string(&dk, &sealed, &aad).expect("open_string");
    assert_eq!(text.expose_secret(), "pat-na1-secret-access-token");
}

#[test]
fn empty_plaintext_round_trips() {
    let dk = DataKey::generate();
    let aad = Aad::refresh_token(INSTALLATION);
    let sealed = seal(&dk, b"", &aad).expect("seal");
    assert!(open(&dk, &sealed, &aad)
        .expect("open")
        .expose_secret()
        .is_empty());
}

#[test]
fn sealing_twice_gives_different_ciphertexts() {
    let dk = DataKey::generate();
    let aad = Aad::access_token(INSTALLATION);
    let a = seal(&dk, b"same", &aad).expect("seal");
    let b = seal(&dk, b"same", &aad).expect("seal");
    assert_ne!(a, b, "fresh nonce per seal");
}

#[test]
fn wrong_owner_in_aad_fails() {
    let dk = DataKey::generate();
    let sealed = seal(&dk, b"token", &Aad::access_token(INSTALLATION)).expect("seal");
    let err = open(&dk, &sealed, &Aad::access_token(OTHER_INSTALLATION)).expect_err("must fail");
    assert_eq!(err, CryptoError::DecryptionFailed);
}

#[test]
fn wrong_kind_in_aad_fails_so_tokens_cannot_be_swapped() {
    let dk = DataKey::generate();
    let access = seal(&dk, b"access", &Aad::access_token(INSTALLATION)).expect("seal");
    let err = open(&dk, &access, &Aad::refresh_token(INSTALLATION)).expect_err("must fail");
    assert_eq!(err, CryptoError::DecryptionFailed);
    let err = open(
        &dk,
        &access,
        &Aad::new(INSTALLATION, SecretKind::ClientSecret),
    )
    .expect_err("must fail");
    assert_eq!(err, CryptoError::DecryptionFailed);
}

#[test]
fn wrong_data_key_fails() {
    let dk = DataKey::generate();
    let other = DataKey::generate();
    let aad = Aad::access_token(INSTALLATION);
    let sealed = seal(&dk, b"token", &aad).expect("seal");
    let err = open(&other, &sealed, &aad).expect_err("must fail");
    assert_eq!(
        err,
        CryptoError::DataKeyMismatch {
            expected: other.id().to_owned(),
            found: dk.id().to_owned()
        }
    );
}

#[test]
fn relabelled_data_key_id_still_fails_authentication() {
    // An attacker who rewrites the dek id inside a sealed value to match another key
    // must not get past the AEAD check: the id is part of the associated data.
    let dk = DataKey::generate();
    let other = DataKey::generate();
    let aad = Aad::access_token(INSTALLATION);
    let sealed = seal(&other, b"token", &aad).expect("seal");
    let relabelled: Sealed = sealed
        .to_string()
        .replacen(other.id(), dk.id(), 1)
        .parse()
        .expect("still well formed");
    assert_eq!(
        open(&dk, &relabelled, &aad).expect_err("must fail"),
        CryptoError::DecryptionFailed
    );
}

#[test]
fn tampered_ciphertext_fails() {
    let dk = DataKey::generate();
    let aad = Aad::access_token(INSTALLATION);
    let sealed = seal(&dk, b"a token long enough to tamper with", &aad).expect("seal");
    let text = sealed.to_string();
    let (head, ct) = text.rsplit_once('.').expect("has parts");
    let mut chars: Vec<char> = ct.chars().collect();
    chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
    let tampered: Sealed = format!("{head}.{}", chars.into_iter().collect::<String>())
        .parse()
        .expect("still well formed");
    assert_eq!(
        open(&dk, &tampered, &aad).expect_err("must fail"),
        CryptoError::DecryptionFailed
    );
}

#[test]
fn sealed_serde_is_a_single_compact_string() {
    let dk = DataKey::generate();
    let aad = Aad::access_token(INSTALLATION);
    let sealed = seal(&dk, b"token", &aad).expect("seal");
    let json = serde_json::to_value(&sealed).expect("serialize");
    let text = json.as_str().expect("a JSON string");
    assert!(text.starts_with(&format!("v1.{}.", dk.id())));
    assert_eq!(text.split('.').count(), 4);
    let back: Sealed = serde_json::from_value(json.clone()).expect("deserialize");
    assert_eq!(back, sealed);
    assert_eq!(
        open_string(&dk, &back, &aad).expect("open").expose_secret(),
        "token"
    );
}

#[test]
fn malformed_sealed_values_are_rejected() {
    let cases = [
        ("v2.dk.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", "version"),
        ("v1.dk.AAAAAAAAAAAAAAAA", "parts"),
        ("v1.d k.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", "id"),
        ("v1.dk.AAAA.AAAAAAAAAAAAAAAAAAAAAA", "nonce"),
        ("v1.dk.AAAAAAAAAAAAAAAA.AAAA", "short"),
        ("v1.dk.AAAAAAAAAAAAAAAA.not base64!", "b64"),
        ("", "empty"),
    ];
    for (input, case) in cases {
        assert!(input.parse::<Sealed>().is_err(), "case {case} must fail");
    }
    assert!(serde_json::from_str::<Sealed>("\"v1.x\"").is_err());
}

#[test]
fn debug_output_contains_no_secrets() {
    let dk = DataKey::generate();
    let aad = Aad::access_token(INSTALLATION);
    let plaintext = "super-secret-token-value";
    let sealed = seal(&dk, plaintext.as_bytes(), &aad).expect("seal");
    let opened = open_string(&dk, &sealed, &aad).expect("open");
    let ring = one_key();
    let wrapped = ring.wrap(&dk, INSTALLATION).expect("wrap");

    let debug = format!("{sealed:?} {opened:?} {dk:?} {ring:?} {wrapped:?}");
    assert!(!debug.contains(plaintext));
    assert!(!debug.contains(&key_b64(1)));
    assert!(debug.contains("REDACTED"));
    // Ciphertext may appear, but shortened.
    assert!(!debug.contains(&sealed.to_string()));
    assert!(debug.len() < 600, "debug output stays short: {debug}");
}

#[test]
fn wrap_unwrap_round_trip_and_context_binding() {
    let ring = one_key();
    let dk = DataKey::generate();
    let aad = Aad::access_token(INSTALLATION);
    let sealed = seal(&dk, b"token", &aad).expect("seal");

    let wrapped = ring.wrap(&dk, INSTALLATION).expect("wrap");
    assert_eq!(wrapped.kid(), "k1");
    assert_eq!(wrapped.dek_id(), dk.id());
    let unwrapped = ring.unwrap(&wrapped, INSTALLATION).expect("unwrap");
    assert_eq!(unwrapped.id(), dk.id());
    assert_eq!(
        open_string(&unwrapped, &sealed, &aad)
            .expect("open")
            .expose_secret(),
        "token"
    );

    // Copying a wrapped key to another tenant does not work.
    assert_eq!(
        ring.unwrap(&wrapped, OTHER_INSTALLATION)
            .expect_err("must fail"),
        CryptoError::DecryptionFailed
    );
}

#[test]
fn unwrap_with_a_different_master_key_under_the_same_kid_fails() {
    let ring = one_key();
    let impostor = keyring(&format!("k1:{}", key_b64(2)), None);
    let wrapped = ring.wrap(&DataKey::generate(), INSTALLATION).expect("wrap");
    assert_eq!(
        impostor
            .unwrap(&wrapped, INSTALLATION)
            .expect_err("must fail"),
        CryptoError::DecryptionFailed
    );
}

#[test]
fn wrapped_key_compact_form_round_trips() {
    let ring = one_key();
    let wrapped = ring.wrap(&DataKey::generate(), INSTALLATION).expect("wrap");
    let text = wrapped.to_string();
    assert!(text.starts_with("v1.k1.dk"));
    let parsed: WrappedKey = text.parse().expect("parse");
    assert_eq!(parsed, wrapped);
    let json = serde_json::to_string(&wrapped).expect("serialize");
    assert_eq!(
        serde_json::from_str::<WrappedKey>(&json).expect("deserialize"),
        wrapped
    );
    assert!("v1.k1.dk.AAAA.AAAA".parse::<WrappedKey>().is_err());
    assert!("v9.k1.dk.AAAAAAAAAAAAAAAA.AAAA"
        .parse::<WrappedKey>()
        .is_err());
}

#[test]
fn tampered_wrapped_key_fails() {
    let ring = one_key();
    let wrapped = ring.wrap(&DataKey::generate(), INSTALLATION).expect("wrap");
    let text = wrapped.to_string();
    let (head, ct) = text.rsplit_once('.').expect("has parts");
    let mut chars: Vec<char> = ct.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    let tampered: WrappedKey = format!("{head}.{}", chars.into_iter().collect::<String>())
        .parse()
        .expect("still well formed");
    assert_eq!(
        ring.unwrap(&tampered, INSTALLATION).expect_err("must fail"),
        CryptoError::DecryptionFailed
    );
}

#[test]
fn rotation_rewrap_then_remove_old_master_key() {
    let k1 = key_b64(1);
    let k2 = key_b64(2);
    let old = keyring(&format!("k1:{k1}"), None);
    let dk = DataKey::generate();
    let aad = Aad::refresh_token(INSTALLATION);
    let sealed = seal(&dk, b"refresh-token", &aad).expect("seal");
    let wrapped_old = old.wrap(&dk, INSTALLATION).expect("wrap");

    // Step 1: new key added and active; old wrapped keys still unwrap.
    let both = keyring(&format!("k1:{k1},k2:{k2}"), None);
    assert_eq!(both.active_kid(), "k2");
    assert!(both.needs_rewrap(&wrapped_old));
    assert_eq!(
        both.unwrap(&wrapped_old, INSTALLATION)
            .expect("old kid")
            .id(),
        dk.id()
    );

    // Step 2: rewrap under the active key.
    let wrapped_new = both.rewrap(&wrapped_old, INSTALLATION).expect("rewrap");
    assert_eq!(wrapped_new.kid(), "k2");
    assert_eq!(wrapped_new.dek_id(), dk.id());
    assert!(!both.needs_rewrap(&wrapped_new));

    // Step 3: old key removed; the rewrapped key and the untouched sealed token still work.
    let only_new = keyring(&format!("k2:{k2}"), None);
    let unwrapped = only_new.unwrap(&wrapped_new, INSTALLATION).expect("unwrap");
    assert_eq!(
        open_string(&unwrapped, &sealed, &aad)
            .expect("open")
            .expose_secret(),
        "refresh-token"
    );
    // A key that was not rewrapped in time is reported by kid.
    assert_eq!(
        only_new
            .unwrap(&wrapped_old, INSTALLATION)
            .expect_err("must fail"),
        CryptoError::UnknownMasterKey { kid: "k1".into() }
    );
}

#[test]
fn explicit_active_key_and_lenient_parsing() {
    let spec = format!(
        " k1 : {} ,\n k2:{} ,",
        key_b64(1),
        key_b64(2).trim_end_matches('=')
    );
    let ring = keyring(&spec, Some("k1"));
    assert_eq!(ring.active_kid(), "k1");
    assert_eq!(ring.kids().collect::<Vec<_>>(), vec!["k1", "k2"]);
    assert!(ring.contains("k2"));
    assert!(!ring.contains("k3"));
    let wrapped = ring.wrap(&DataKey::generate(), INSTALLATION).expect("wrap");
    assert_eq!(wrapped.kid(), "k1");
}

#[test]
fn fingerprints_identify_keys_without_revealing_them() {
    let a = keyring(&format!("k1:{}", key_b64(1)), None);
    let b = keyring(&format!("other:{}", key_b64(1)), None);
    let c = keyring(&format!("k1:{}", key_b64(3)), None);
    let fa = a.fingerprint("k1").expect("present");
    assert_eq!(fa.len(), 16);
    assert_eq!(Some(fa.clone()), b.fingerprint("other"));
    assert_ne!(Some(fa), c.fingerprint("k1"));
    assert_eq!(a.fingerprint("nope"), None);
}

#[test]
fn keyring_parsing_errors() {
    let good = key_b64(1);
    let short = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([1u8; 16])
    };
    let zero = key_b64(0);
    let cases: Vec<(String, Option<&str>, CryptoError)> = vec![
        (String::new(), None, CryptoError::EmptyKeyring),
        (" , ,".into(), None, CryptoError::EmptyKeyring),
        (
            good.clone(),
            None,
            CryptoError::MalformedKeyEntry { position: 1 },
        ),
        (
            format!("k1:{good},k2"),
            None,
            CryptoError::MalformedKeyEntry { position: 2 },
        ),
        (
            format!(":{good}"),
            None,
            CryptoError::MalformedKeyEntry { position: 1 },
        ),
        (
            "k1:".into(),
            None,
            CryptoError::MalformedKeyEntry { position: 1 },
        ),
        (
            format!("k.1:{good}"),
            None,
            CryptoError::InvalidKeyId { id: "k.1".into() },
        ),
        (
            "k1:***".into(),
            None,
            CryptoError::InvalidKeyEncoding { kid: "k1".into() },
        ),
        (
            format!("k1:{short}"),
            None,
            CryptoError::InvalidKeyLength {
                kid: "k1".into(),
                len: 16,
            },
        ),
        (
            format!("k1:{zero}"),
            None,
            CryptoError::WeakKey { kid: "k1".into() },
        ),
        (
            format!("k1:{good},k1:{}", key_b64(2)),
            None,
            CryptoError::DuplicateKeyId { kid: "k1".into() },
        ),
        (
            format!("k1:{good}"),
            Some("k9"),
            CryptoError::UnknownActiveKey { kid: "k9".into() },
        ),
    ];
    for (spec, active, expected) in cases {
        let err = MasterKeyring::parse(&spec, active).expect_err(&format!("{expected:?}"));
        // Error messages never echo key material.
        assert!(!err.to_string().contains(&good));
        assert_eq!(err, expected);
    }
}

#[test]
fn from_keys_validates_like_parse() {
    assert!(MasterKeyring::from_keys([("k1".to_owned(), [7u8; 32])], "k1").is_ok());
    assert_eq!(
        MasterKeyring::from_keys([("k1".to_owned(), [7u8; 32])], "k2").expect_err("unknown"),
        CryptoError::UnknownActiveKey { kid: "k2".into() }
    );
    assert_eq!(
        MasterKeyring::from_keys(Vec::<(String, [u8; 32])>::new(), "k1").expect_err("empty"),
        CryptoError::EmptyKeyring
    );
    assert_eq!(
        MasterKeyring::from_keys(
            [("a".to_owned(), [1u8; 32]), ("a".to_owned(), [2u8; 32])],
            "a"
        )
        .expect_err("duplicate"),
        CryptoError::DuplicateKeyId { kid: "a".into() }
    );
}

#[test]
fn generated_keys_parse_and_differ() {
    let a = generate_key_b64();
    let b = generate_key_b64();
    assert_ne!(a.expose_secret(), b.expose_secret());
    let ring = keyring(&format!("dev:{}", a.expose_secret()), None);
    assert_eq!(ring.active_kid(), "dev");
    assert!(!format!("{a:?}").contains(a.expose_secret()));
}

#[test]
fn crypto_shredding_data_key_loss_makes_values_unrecoverable() {
    // The store deletes the wrapped key; a fresh key (even with the same tenant context)
    // cannot open what the destroyed one sealed.
    let ring = one_key();
    let aad = Aad::access_token(INSTALLATION);
    let dk = DataKey::generate();
    let sealed = seal(&dk, b"token", &aad).expect("seal");
    drop(dk);
    let replacement = ring
        .unwrap(
            &ring.wrap(&DataKey::generate(), INSTALLATION).expect("wrap"),
            INSTALLATION,
        )
        .expect("unwrap");
    assert!(open(&replacement, &sealed, &aad).is_err());
}
