//! Code lists: themes, SPIRAL dimensions, PCS axes, countries, languages and
//! the small closed vocabularies of the document schemas.
//!
//! Documents store codes, never labels (`THEME:waste`, `SPIRAL:B`, `PCS:AX4`),
//! so they read the same in every language; labels live here, in French
//! (the working language) and English.

/// A closed list of codes with their labels.
#[derive(Debug)]
pub struct CodeList {
    /// What the codes are, for error messages.
    pub name: &'static str,
    /// `(code, French label, English label)`.
    pub codes: &'static [(&'static str, &'static str, &'static str)],
}

impl CodeList {
    /// Whether `code` belongs to the list.
    pub fn contains(&self, code: &str) -> bool {
        self.codes.iter().any(|(c, _, _)| *c == code)
    }

    /// The codes, comma-separated, for error messages and help.
    pub fn list(&self) -> String {
        self.codes.iter().map(|(c, _, _)| *c).collect::<Vec<_>>().join(", ")
    }

    /// The label of `code` in `lang` (French unless `lang` is `en`).
    pub fn label(&self, code: &str, lang: &str) -> Option<&'static str> {
        self.codes.iter().find(|(c, _, _)| *c == code).map(|(_, fr, en)| if lang == "en" { *en } else { *fr })
    }
}

/// Themes of cooperation.
pub static THEMES: CodeList = CodeList {
    name: "theme",
    codes: &[
        ("THEME:waste", "Déchets et propreté", "Waste and cleanliness"),
        ("THEME:water", "Eau et assainissement", "Water and sanitation"),
        ("THEME:environment", "Environnement", "Environment"),
        ("THEME:energy", "Énergie", "Energy"),
        ("THEME:mobility", "Mobilité", "Mobility"),
        ("THEME:housing", "Logement", "Housing"),
        ("THEME:health", "Santé", "Health"),
        ("THEME:education", "Éducation", "Education"),
        ("THEME:youth", "Jeunesse", "Youth"),
        ("THEME:women", "Femmes", "Women"),
        ("THEME:elderly", "Personnes âgées", "Older people"),
        ("THEME:disability", "Handicap", "Disability"),
        ("THEME:migration", "Migrations", "Migration"),
        ("THEME:employment", "Emploi et insertion", "Employment"),
        ("THEME:social-cohesion", "Cohésion sociale", "Social cohesion"),
        ("THEME:culture", "Culture", "Culture"),
        ("THEME:sport", "Sport", "Sport"),
        ("THEME:tourism", "Tourisme solidaire", "Solidarity tourism"),
        ("THEME:agriculture", "Agriculture et alimentation", "Agriculture and food"),
        ("THEME:local-economy", "Économie locale", "Local economy"),
        ("THEME:governance", "Gouvernance locale", "Local governance"),
        ("THEME:participation", "Participation citoyenne", "Citizen participation"),
        ("THEME:digital", "Numérique", "Digital"),
    ],
};

/// SPIRAL well-being dimensions. A and B are sure; the others follow the
/// method's published lists and may be renamed by the network.
pub static DIMENSIONS: CodeList = CodeList {
    name: "SPIRAL dimension",
    codes: &[
        ("SPIRAL:A", "Accès aux moyens de vie", "Access to essential resources"),
        ("SPIRAL:B", "Cadre de vie", "Living environment"),
        ("SPIRAL:C", "Relations avec les institutions", "Relations with institutions"),
        ("SPIRAL:D", "Relations personnelles", "Personal relations"),
        ("SPIRAL:E", "Équilibres sociétaux", "Social balance"),
        ("SPIRAL:F", "Équilibres personnels", "Personal balance"),
        ("SPIRAL:G", "Sentiments de bien-être", "Feelings of well-being"),
        ("SPIRAL:H", "Attitudes et initiatives", "Attitudes and initiatives"),
    ],
};

/// The four axes of Wallonia's Plans de Cohésion Sociale.
pub static PCS_AXES: CodeList = CodeList {
    name: "PCS axis",
    codes: &[
        ("PCS:AX1", "Insertion socioprofessionnelle", "Job integration"),
        ("PCS:AX2", "Accès à un logement décent", "Decent housing"),
        ("PCS:AX3", "Accès à la santé et assuétudes", "Health and addictions"),
        ("PCS:AX4", "Retissage des liens sociaux", "Rebuilding social ties"),
    ],
};

/// What a request needs.
pub static NEED_TYPES: CodeList = CodeList {
    name: "need type",
    codes: &[
        ("expertise", "Expertise", "Expertise"),
        ("training", "Formation", "Training"),
        ("mission", "Mission", "Mission"),
        ("documents", "Documents", "Documents"),
        ("equipment", "Équipement", "Equipment"),
        ("funding_lead", "Piste de financement", "Funding lead"),
        ("volunteers", "Bénévoles", "Volunteers"),
    ],
};

/// How a request may be answered.
pub static FORMATS: CodeList = CodeList {
    name: "format",
    codes: &[
        ("remote", "À distance", "Remote"),
        ("documents", "Documents", "Documents"),
        ("mission_ma", "Mission au Maroc", "Mission in Morocco"),
        ("mission_be", "Mission en Belgique", "Mission in Belgium"),
    ],
};

/// What an offer brings.
pub static RESOURCE_TYPES: CodeList = CodeList {
    name: "resource type",
    codes: &[
        ("expertise_days", "Jours d'expertise", "Expertise days"),
        ("training", "Formation", "Training"),
        ("documents", "Documents", "Documents"),
        ("host_mission", "Accueil d'une mission", "Host a mission"),
        ("send_mission", "Envoi d'une mission", "Send a mission"),
        ("equipment", "Équipement", "Equipment"),
        ("introduction", "Mise en relation", "Introduction"),
    ],
};

/// Kinds of project.
pub static PROJECT_KINDS: CodeList = CodeList {
    name: "project kind",
    codes: &[
        ("demonstrative_action", "Action démonstrative", "Demonstrative action"),
        ("co_responsibility_action", "Action de coresponsabilité", "Co-responsibility action"),
        ("cic_project", "Projet CIC", "CIC project"),
        ("pcs_action", "Action PCS", "PCS action"),
        ("other", "Autre", "Other"),
    ],
};

/// A commune's connectivity, so partners know when to expect it.
pub static CONNECTIVITY: CodeList = CodeList {
    name: "connectivity",
    codes: &[
        ("good", "Bonne", "Good"),
        ("intermittent", "Intermittente", "Intermittent"),
        ("scheduled", "Fenêtre planifiée", "Scheduled window"),
    ],
};

/// Flags a follow-up puts on the document it follows.
pub static FOLLOWUP_FLAGS: CodeList = CodeList {
    name: "follow-up flag",
    codes: &[
        ("priority", "Prioritaire", "Priority"),
        ("stalled", "Au point mort", "Stalled"),
        ("needs_partner", "Cherche un partenaire", "Needs a partner"),
        ("needs_funding", "Cherche un financement", "Needs funding"),
        ("to_review", "À revoir", "To review"),
        ("exemplary", "Exemplaire", "Exemplary"),
    ],
};

/// Groups a project targets.
pub static TARGET_GROUPS: CodeList = CodeList {
    name: "target group",
    codes: &[
        ("youth", "Jeunes", "Young people"),
        ("women", "Femmes", "Women"),
        ("elderly", "Personnes âgées", "Older people"),
        ("disabled", "Personnes en situation de handicap", "People with disabilities"),
        ("migrants", "Migrants", "Migrants"),
        ("families", "Familles", "Families"),
        ("residents", "Habitants", "Residents"),
    ],
};

/// Languages text may be written in: French first, then Dutch, Arabic,
/// English, the Amazigh variants used in Morocco, and a few neighbours.
pub static LANGUAGES: CodeList = CodeList {
    name: "language",
    codes: &[
        ("fr", "français", "French"),
        ("nl", "néerlandais", "Dutch"),
        ("ar", "arabe", "Arabic"),
        ("en", "anglais", "English"),
        ("zgh", "amazighe standard", "Standard Moroccan Amazigh"),
        ("ber", "berbère", "Berber"),
        ("tzm", "tamazight", "Central Atlas Tamazight"),
        ("shi", "tachelhit", "Tashelhit"),
        ("rif", "tarifit", "Tarifit"),
        ("de", "allemand", "German"),
        ("es", "espagnol", "Spanish"),
        ("it", "italien", "Italian"),
    ],
};

/// Right-to-left languages among [`LANGUAGES`].
pub const RTL_LANGUAGES: &[&str] = &["ar"];

/// ISO 3166-1 alpha-2 country codes.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO \
BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH \
ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL \
IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME \
MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH \
PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC \
TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Whether `code` is an ISO 3166-1 alpha-2 country code (upper case).
pub fn is_country(code: &str) -> bool {
    code.len() == 2 && COUNTRIES.split(' ').any(|c| c == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_are_checked() {
        assert!(is_country("BE"));
        assert!(is_country("MA"));
        assert!(!is_country("XX"));
        assert!(!is_country("be"));
        assert_eq!(COUNTRIES.split(' ').count(), 249);
    }

    #[test]
    fn labels_follow_the_language() {
        assert_eq!(THEMES.label("THEME:waste", "fr"), Some("Déchets et propreté"));
        assert_eq!(THEMES.label("THEME:waste", "en"), Some("Waste and cleanliness"));
        assert!(!DIMENSIONS.contains("SPIRAL:Z"));
    }
}
