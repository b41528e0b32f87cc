"""What a patient reads for each verdict, in Arabic, French and English."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "AUTHENTIC": {
        "ar": "هذا الدواء أصلي ومسجل لدى السلطات الصحية.",
        "fr": "Ce médicament est authentique et enregistré auprès des autorités sanitaires.",
        "en": "This medicine is genuine and registered with the health authorities.",
    },
    "UNKNOWN": {
        "ar": "هذه العلبة غير مسجلة: قد تكون مزيفة. لا تستعملها وأبلغ الصيدلي.",
        "fr": "Cette boîte n'est pas enregistrée : elle pourrait être falsifiée. Ne l'utilisez pas et "
              "signalez-la à votre pharmacien.",
        "en": "This pack is not registered: it may be falsified. Do not use it; tell your pharmacist.",
    },
    "MISMATCH": {
        "ar": "معلومات العلبة لا تطابق التسجيل. قد تكون مزيفة. أبلغ الصيدلي.",
        "fr": "Les informations de la boîte ne correspondent pas à l'enregistrement. Signalez-la à votre "
              "pharmacien.",
        "en": "The pack's details do not match its registration. Tell your pharmacist.",
    },
    "ALREADY_DISPENSED": {
        "ar": "هذه العلبة سبق صرفها في صيدلية. إذا اشتريتها الآن للتو، أبلغ الصيدلي.",
        "fr": "Cette boîte a déjà été délivrée en pharmacie. Si vous venez de l'acheter, signalez-la.",
        "en": "This pack was already dispensed by a pharmacy. If you just bought it, report it.",
    },
    "RECALLED": {
        "ar": "تم سحب هذه الحصة من السوق. لا تستعمل الدواء وأرجعه إلى الصيدلية.",
        "fr": "Ce lot a été rappelé. N'utilisez pas ce médicament et rapportez-le à la pharmacie.",
        "en": "This batch has been recalled. Do not use it; return it to a pharmacy.",
    },
    "QUARANTINED": {
        "ar": "هذه الحصة موقوفة مؤقتا من طرف السلطات الصحية. استشر الصيدلي.",
        "fr": "Ce lot est suspendu par les autorités sanitaires. Demandez conseil à votre pharmacien.",
        "en": "This batch is on hold by the health authorities. Ask your pharmacist.",
    },
    "EXPIRED": {
        "ar": "انتهت صلاحية هذا الدواء. لا تستعمله.",
        "fr": "Ce médicament est périmé. Ne l'utilisez pas.",
        "en": "This medicine has expired. Do not use it.",
    },
    "NOT_IN_CUSTODY": {
        "ar": "هذه العلبة أصلية لكنها لم تسلم إلى هذه الصيدلية.",
        "fr": "Cette boîte est authentique mais n'a pas été livrée à cette pharmacie.",
        "en": "This pack is genuine but was not delivered to this pharmacy.",
    },
}

SAFE = {"AUTHENTIC"}
