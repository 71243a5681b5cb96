//! The shared benchmark workload (`shared/bench-workload.mjs`), ported
//! exactly: document `i` always has the same content and the same 10 edits,
//! so figures compare with other systems that run it.

use passerelle_protocol::document::{Edit, Scalar};

const COMMUNES_BE: [&str; 8] = [
    "Schaerbeek",
    "Molenbeek-Saint-Jean",
    "Saint-Gilles",
    "Namur",
    "Liège",
    "Mons",
    "Charleroi",
    "Ottignies-Louvain-la-Neuve",
];
const COMMUNES_MA: [&str; 8] =
    ["Tétouan", "Chefchaouen", "Al Hoceïma", "Nador", "Oujda", "Berkane", "Larache", "Ouarzazate"];
const STATUSES: [&str; 5] = ["open", "in_review", "accepted", "in_progress", "done"];
const TAG_POOL: [&str; 12] = [
    "voirie",
    "éclairage",
    "école",
    "transport",
    "propreté",
    "espaces-verts",
    "sécurité",
    "culture",
    "sport",
    "logement",
    "eau",
    "énergie",
];
const TOPICS: [&str; 12] = [
    "réfection de la chaussée communale",
    "installation d'un éclairage public",
    "rénovation de l'école primaire",
    "création d'une piste cyclable",
    "nettoyage du parc municipal",
    "plantation d'arbres en centre-ville",
    "sécurisation d'un carrefour",
    "ouverture d'une médiathèque",
    "rénovation du gymnase communal",
    "aide au logement social des familles",
    "réparation d'une fuite d'eau",
    "panneaux solaires sur la mairie",
];
const SENTENCES: [&str; 8] = [
    "Les habitants du quartier signalent depuis plusieurs mois une dégradation importante de la situation. ",
    "La commune souhaite mobiliser des partenaires publics et privés afin de financer les travaux nécessaires. ",
    "Une première estimation évalue le coût total à environ cent vingt mille euros, études comprises. ",
    "Le conseil municipal a voté à l'unanimité le principe de cette opération lors de sa dernière séance. ",
    "Nous recherchons des entreprises, des associations ou des collectivités prêtes à partager leur expérience. ",
    "Le calendrier prévisionnel prévoit un démarrage des travaux au printemps et une livraison avant l'été. ",
    "Les élèves, les familles et les commerçants seront consultés à chaque étape du projet. ",
    "Toute proposition d'aide technique, matérielle ou financière sera étudiée avec la plus grande attention. ",
];
/// Description length in code points.
pub const DESCRIPTION_LEN: usize = 300;
/// Title length in code points.
pub const TITLE_LEN: usize = 40;
/// 2025-01-01T00:00:00Z in milliseconds.
const EPOCH_2025_MS: i64 = 1_735_689_600_000;

/// Exactly [`DESCRIPTION_LEN`] code points: sentences i, i+1, ... then cut.
pub fn description(i: usize) -> String {
    let mut s = String::new();
    let mut k = 0;
    while s.chars().count() < DESCRIPTION_LEN {
        s.push_str(SENTENCES[(i + k) % SENTENCES.len()]);
        k += 1;
    }
    s.chars().take(DESCRIPTION_LEN).collect()
}

/// Exactly [`TITLE_LEN`] code points.
pub fn title(i: usize) -> String {
    format!("Demande n°{i} : {}", TOPICS[i % TOPICS.len()]).chars().take(TITLE_LEN).collect()
}

/// "BE" for even documents, "MA" for odd ones.
pub fn country(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "BE" } else { "MA" }
}

/// The commune of document `i`.
pub fn commune(i: usize) -> &'static str {
    let list = if i.is_multiple_of(2) { &COMMUNES_BE } else { &COMMUNES_MA };
    list[(i / 2) % list.len()]
}

/// createdAt of document `i`: 2025-01-01 plus `i` minutes, in ms.
pub fn created_at_ms(i: usize) -> i64 {
    EPOCH_2025_MS + i as i64 * 60_000
}

/// The edits that create document `i` (its first change).
pub fn initial(i: usize) -> Vec<Edit> {
    let mut edits = vec![
        Edit::Put { field: "kind".into(), value: Scalar::Str("request".into()) },
        Edit::PlainText { field: "title".into(), text: title(i) },
        Edit::PlainText { field: "description".into(), text: description(i) },
        Edit::Put { field: "country".into(), value: Scalar::Str(country(i).into()) },
        Edit::Put { field: "commune".into(), value: Scalar::Str(commune(i).into()) },
        Edit::Put { field: "status".into(), value: Scalar::Str("open".into()) },
    ];
    for k in 0..3 {
        edits.push(Edit::Push { field: "tags".into(), value: Scalar::Str(TAG_POOL[(i + k) % TAG_POOL.len()].into()) });
    }
    edits.push(Edit::Put { field: "createdAt".into(), value: Scalar::Timestamp(created_at_ms(i)) });
    edits
}

/// The 10 edits of document `i`, each its own change: k%3==0 sets the
/// status, k%3==1 appends a tag, k%3==2 appends to the title.
pub fn edits(i: usize) -> Vec<Edit> {
    let (mut st, mut tg, mut ti) = (1, 3, 1);
    (0..10)
        .map(|k| match k % 3 {
            0 => {
                let e = Edit::Put { field: "status".into(), value: Scalar::Str(STATUSES[st % STATUSES.len()].into()) };
                st += 1;
                e
            }
            1 => {
                let e =
                    Edit::Push { field: "tags".into(), value: Scalar::Str(TAG_POOL[(i + tg) % TAG_POOL.len()].into()) };
                tg += 1;
                e
            }
            _ => {
                let e = Edit::AppendText { field: "title".into(), text: format!(" (MAJ {ti})") };
                ti += 1;
                e
            }
        })
        .collect()
}

/// Index of the document touched by latency probe `k`.
pub fn latency_doc(k: usize, n: usize) -> usize {
    (k * 7919 + 13) % n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_javascript_definition() {
        assert_eq!(title(0).chars().count(), TITLE_LEN);
        assert_eq!(title(3), "Demande n°3 : création d'une piste cycla");
        assert_eq!(description(5).chars().count(), DESCRIPTION_LEN);
        assert!(description(1).starts_with("La commune souhaite"));
        assert_eq!(commune(0), "Schaerbeek");
        assert_eq!(commune(3), "Chefchaouen");
        assert_eq!(country(3), "MA");
        assert_eq!(created_at_ms(2), EPOCH_2025_MS + 120_000);
        let e = edits(0);
        assert_eq!(e[0], Edit::Put { field: "status".into(), value: Scalar::Str("in_review".into()) });
        assert_eq!(e[1], Edit::Push { field: "tags".into(), value: Scalar::Str("transport".into()) });
        assert_eq!(e[2], Edit::AppendText { field: "title".into(), text: " (MAJ 1)".into() });
        assert_eq!(e[9], Edit::Put { field: "status".into(), value: Scalar::Str("done".into()) });
    }
}
