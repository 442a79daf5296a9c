"""X12 944 / 945 / 947 / 846 parsing: envelopes, mapping, clear errors, stable ids."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from availability.domain.errors import InvalidEvent
from availability.domain.events import validate_event

from adapters.wms.x12 import (
    FUNCTIONAL_IDS,
    EdiError,
    X12Options,
    parse_944,
    parse_interchanges,
    parse_x12,
)

UTC = timezone.utc


def edi(*sets, ctrl=7, usage="P", sender="ACME3PL", fid=None, gs_date="20261120", gs_time="1015", term="~\n"):
    """An interchange with one functional group holding `sets` ((code, [segment, ...]), ...).
    SE / GE / IEA counts and control numbers are computed, so a test breaks only what it means to."""
    isa = "*".join(
        ["ISA", "00", " " * 10, "00", " " * 10, "ZZ", sender.ljust(15), "ZZ", "RETAILCO".ljust(15),
         "261120", "1015", "U", "00401", f"{ctrl:09d}", "0", usage, ">"]
    )
    fid = fid or FUNCTIONAL_IDS[sets[0][0]]
    segments = [isa, f"GS*{fid}*{sender}*RETAILCO*{gs_date}*{gs_time}*{ctrl}*X*004010"]
    for n, (code, body) in enumerate(sets, start=1):
        st = f"{n:04d}"
        segments += [f"ST*{code}*{st}", *body, f"SE*{len(body) + 2}*{st}"]
    segments += [f"GE*{len(sets)}*{ctrl}", f"IEA*1*{ctrl:09d}"]
    return term.join(segments) + term


RECEIPT = ["W17*F*20261120*RCV1*PO-1*SHP-1*W*0930", "N1*WH*DALLAS*9*DC1", "W07*5*EA**SK*TEE-BLK-M", "W14*5"]
SHIPMENT = ["W06*N*ORD-1*20261120*SHP-1", "N1*SF*DALLAS*9*DC1", "G62*11*20261120*8*1430", "W12*CC*2*2*0*EA**SK*CAP-RED"]


def adjustment(*w19s):
    return ("947", ["W15*20261120*ADJ1", "N1*WH*DALLAS*9*DC1", "G62*09*20261120*W*1600", *w19s])


# ------------------------------------------------------------------------ the sample files


def test_944_receipt_sample(samples):
    events = parse_x12((samples / "wms_944_receipt.edi").read_bytes())
    assert [(e.type, e.sku, e.quantity, e.location) for e in events] == [
        ("receipt", "TEE-BLK-M", 48, "DC1"),
        ("receipt", "TEE-BLK-L", 36, "DC1"),
        ("receipt", "CAP-RED", 24, "DC1"),  # identified by the vendor item number (VN)
    ]
    first = events[0]
    assert first.event_id == "wms:944:ACME3PL:RCV0001:1"
    assert first.source == "wms"
    assert first.reference == "PO-4500012345"  # drawn down from incoming by the ledger
    assert first.occurred_at == datetime(2026, 11, 20, 9, 42, tzinfo=UTC)  # from G62
    assert first.correlation_id == "x12:ACME3PL:000000101:0001"
    assert all(validate_event(e) for e in events)


def test_945_shipment_sample(samples):
    events = parse_x12((samples / "wms_945_shipment.edi").read_text())
    assert [(e.type, e.sku, e.quantity, e.reference) for e in events] == [
        ("ship", "TEE-BLK-M", 2, "ORD-1001"),
        ("ship", "CAP-RED", 1, "ORD-1001"),
    ]
    assert events[0].event_id == "wms:945:ACME3PL:SHP-5001:1"
    assert events[0].occurred_at == datetime(2026, 11, 20, 14, 32, tzinfo=UTC)


def test_947_adjustment_sample_maps_reason_codes(samples):
    events = parse_x12((samples / "wms_947_adjustment.edi").read_bytes())
    assert [(e.sku, e.reason, e.quantity) for e in events] == [
        ("TEE-BLK-M", "damaged", 2),  # AU damaged in facility
        ("TEE-BLK-L", "quality_hold", 3),  # 05 put on hold
        ("TEE-BLK-L", "quality_release", 1),  # 55 taken off hold
        ("CAP-RED", "lost", 4),  # AA physical count, -4
        ("TEE-WHT-M", "found", 2),  # 51 unable-to-locate product located
        ("TEE-BLK-M", "write_off", 2),  # 07 dumped or destroyed
        ("MUG-CLASSIC", "lost", 1),  # 06 book adjustment decrease, sent unsigned
    ]
    assert {e.type for e in events} == {"adjustment"}
    assert {e.reference for e in events} == {"ADJ3001"}
    assert all(e.quantity >= 0 for e in events)


def test_846_inventory_sample_is_an_absolute_count(samples):
    events = parse_x12((samples / "wms_846_inventory.edi").read_bytes())
    assert [(e.type, e.sku, e.quantity) for e in events] == [
        ("cycle_count", "TEE-BLK-M", 120),  # QTY*17 on hand preferred over QTY*33
        ("cycle_count", "TEE-BLK-L", 80),
        ("cycle_count", "CAP-RED", 40),  # only QTY*33 given
        ("cycle_count", "MUG-CLASSIC", 0),  # a zero count is a fact, not noise
    ]
    assert events[0].occurred_at == datetime(2026, 11, 20, 6, 0, tzinfo=UTC)  # DTM*007 as-of
    assert events[0].event_id == "wms:846:ACME3PL:INV-20261120-DC1:DC1:TEE-BLK-M"
    assert events[0].reference == "INV-20261120-DC1"


def test_other_delimiters_and_5010_give_the_same_events(samples):
    star = parse_x12((samples / "wms_945_shipment.edi").read_bytes())
    pipe = parse_x12((samples / "wms_945_pipe_delimited.x12").read_bytes())
    assert [(e.event_id, e.sku, e.quantity) for e in pipe] == [(e.event_id, e.sku, e.quantity) for e in star]


@pytest.mark.parametrize(
    "name, fragments",
    [
        ("wms_bad_isa_length.edi", ["ISA segment #1", "ISA-06", "14 characters, expected 15", "106"]),
        ("wms_bad_se_count.edi", ["SE segment #16", "SE-01", "says 12 segments", "has 14"]),
        ("wms_bad_control_number.edi", ["IEA segment #18", "IEA-02", "000000999", "ISA-13"]),
        ("wms_bad_quantity.edi", ["W07 segment #12", "944 set 0001", "W07-01", "'3X6' is not a number"]),
        ("wms_bad_item_qualifier.edi", ["W07 segment #14", "W07-04", "SK/VN/BP/IN", "ZZ CAP-RED"]),
        ("wms_bad_w14_total.edi", ["W14 segment #15", "110", "(108)"]),
    ],
)
def test_malformed_samples_are_refused_naming_segment_and_element(samples, name, fragments):
    with pytest.raises(EdiError) as caught:
        parse_x12((samples / name).read_bytes())
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert isinstance(caught.value, InvalidEvent)  # dead-lettered like any invalid event
    assert caught.value.reason in message and caught.value.segment_id in message


# ------------------------------------------------------------------------ idempotent ids


def test_a_resent_document_in_a_new_envelope_keeps_its_event_ids():
    first = parse_x12(edi(("944", RECEIPT), ctrl=1))
    resent = parse_x12(edi(("944", RECEIPT), ctrl=2, gs_time="1700"))
    assert [e.event_id for e in resent] == [e.event_id for e in first]
    assert first[0].correlation_id != resent[0].correlation_id  # but says which file it came from


def test_parsing_twice_gives_equal_events(samples):
    data = (samples / "wms_947_adjustment.edi").read_bytes()
    assert parse_x12(data) == parse_x12(data)


def test_two_partners_with_the_same_receipt_number_do_not_collide():
    a = parse_x12(edi(("944", RECEIPT), sender="ACME3PL"))
    b = parse_x12(edi(("944", RECEIPT), sender="OTHER3PL"))
    assert a[0].event_id != b[0].event_id


def test_the_same_document_twice_in_one_file_is_refused():
    with pytest.raises(EdiError, match="produced twice"):
        parse_x12(edi(("944", RECEIPT), ("944", RECEIPT)))


def test_line_keys_follow_lx_numbers():
    body = ["W17*F*20261120*RCV9", "N1*WH*X*9*DC1", "LX*10", "W07*1*EA**SK*A", "LX*20", "W07*2*EA**SK*B",
            "W07*3*EA**SK*C"]
    assert [e.event_id.rsplit(":", 1)[1] for e in parse_x12(edi(("944", body)))] == ["10", "20.1", "20.2"]


# ------------------------------------------------------------------------ envelope errors


def test_group_and_set_counts_are_checked():
    good = edi(("944", RECEIPT))
    with pytest.raises(EdiError, match="GE-01 says 2 transaction sets but group 7 has 1"):
        parse_x12(good.replace("GE*1*7", "GE*2*7"))
    with pytest.raises(EdiError, match="GE-02 control number '8' does not match GS-06 '7'"):
        parse_x12(good.replace("GE*1*7", "GE*1*8"))
    with pytest.raises(EdiError, match="SE-02 control number '0002' does not match ST-02 '0001'"):
        parse_x12(good.replace("SE*6*0001", "SE*6*0002"))
    with pytest.raises(EdiError, match="IEA-01 says 2 functional groups"):
        parse_x12(good.replace("IEA*1*", "IEA*2*"))


def test_structure_errors_name_the_segment():
    good = edi(("944", RECEIPT))
    with pytest.raises(EdiError, match=r"GE segment #8.*not closed by SE"):
        parse_x12(good.replace("SE*6*0001~\n", ""))
    with pytest.raises(EdiError, match="not closed by IEA"):
        parse_x12(good.split("IEA")[0])
    with pytest.raises(EdiError, match="segment outside a transaction set"):
        parse_x12(good.replace("ST*944", "N9*PO*1~\nST*944"))
    with pytest.raises(EdiError, match="expected an ISA interchange header"):
        parse_x12("GS*RE*X~")
    with pytest.raises(EdiError, match="empty file"):
        parse_x12(b"  \n")
    with pytest.raises(EdiError, match="ISA segment has 3 elements, expected 16"):
        parse_x12("ISA*00*          *00~")


def test_unsupported_set_and_wrong_functional_group_are_refused():
    with pytest.raises(EdiError, match="transaction set 850 is not supported"):
        parse_x12(edi(("850", ["BEG*00*SA*PO1**20261120"]), fid="PO"))
    with pytest.raises(EdiError, match="functional identifier 'SW' does not match transaction set 944"):
        parse_x12(edi(("944", RECEIPT), fid="SW"))


def test_test_interchanges_are_refused_unless_accepted():
    data = edi(("944", RECEIPT), usage="T")
    with pytest.raises(EdiError, match="ISA-15.*test interchange"):
        parse_x12(data)
    assert len(parse_x12(data, accept_test=True)) == 1


def test_several_interchanges_in_one_file_and_crlf_line_ends():
    data = edi(("944", RECEIPT), ctrl=1, term="~\r\n") + edi(("945", SHIPMENT), ctrl=2, term="~\r\n")
    assert [e.type for e in parse_x12(data.encode())] == ["receipt", "ship"]
    assert len(parse_interchanges(data)) == 2


def test_a_newline_can_be_the_segment_terminator():
    assert [e.sku for e in parse_x12(edi(("945", SHIPMENT), term="\n"))] == ["CAP-RED"]


# ------------------------------------------------------------------------ line errors


@pytest.mark.parametrize(
    "w07, message",
    [
        ("W07*-5*EA**SK*TEE-BLK-M", "W07-01: quantity received -5 is negative"),
        ("W07*2.5*EA**SK*TEE-BLK-M", "W07-01: quantity received 2.5 is not a whole number of units"),
        ("W07*5*CA**SK*TEE-BLK-M", "W07-02: unit of measure 'CA' is not supported"),
        ("W07*5*EA**SK", "W07-05: W07-04 qualifier and W07-05 item id must be given together"),
        ("W07*5*EA*012345678905", "items given only by UPC need a upc_map"),
        ("W07*5*EA**SK*TEE|BLK", "sku must be 1..128 printable characters"),
    ],
)
def test_bad_receipt_lines(w07, message):
    body = ["W17*F*20261120*RCV1*PO-1", "N1*WH*DALLAS*9*DC1", w07]
    with pytest.raises(EdiError, match="W07 segment #6 \\(944 set 0001\\)") as caught:
        parse_x12(edi(("944", body)))
    assert message in str(caught.value)


def test_whole_decimal_quantities_are_accepted():
    body = ["W17*F*20261120*RCV1", "N1*WH*DALLAS*9*DC1", "W07*5.00*EA**SK*TEE-BLK-M"]
    assert parse_x12(edi(("944", body)))[0].quantity == 5


def test_upc_only_lines_map_through_upc_map():
    body = ["W17*F*20261120*RCV1", "N1*WH*DALLAS*9*DC1", "W07*5*EA*012345678905", "W07*1*EA**UP*012345678912"]
    upc_map = {"012345678905": "TEE-BLK-M", "012345678912": "TEE-BLK-L"}
    assert [e.sku for e in parse_x12(edi(("944", body)), upc_map=upc_map)] == ["TEE-BLK-M", "TEE-BLK-L"]


def test_item_qualifier_preference_is_configurable():
    body = ["W17*F*20261120*RCV1", "N1*WH*DALLAS*9*DC1", "W07*5*EA**SK*OUR-SKU*BP*BUYER-PART"]
    assert parse_x12(edi(("944", body)))[0].sku == "OUR-SKU"
    assert parse_x12(edi(("944", body)), item_qualifiers=("BP",))[0].sku == "BUYER-PART"


def test_945_needs_a_shipment_id_to_keep_partial_shipments_apart():
    body = ["W06*N*ORD-1*20261120", "N1*SF*DALLAS*9*DC1", "W12*CC*2*2*0*EA**SK*CAP-RED"]
    with pytest.raises(EdiError, match="W06-04: shipment identification number is required"):
        parse_x12(edi(("945", body)))


def test_945_w03_total_is_checked():
    with pytest.raises(EdiError, match="total units shipped 3 does not match the sum of W12-03 quantities \\(2\\)"):
        parse_x12(edi(("945", [*SHIPMENT, "W03*3"])))


def test_a_set_must_start_with_its_beginning_segment():
    with pytest.raises(EdiError, match="a 944 must begin with W17"):
        parse_x12(edi(("944", ["N1*WH*DALLAS*9*DC1", "W07*5*EA**SK*X"])))


def test_a_receipt_without_lines_is_refused():
    with pytest.raises(EdiError, match="receipt RCV1 has no W07 line items"):
        parse_x12(edi(("944", ["W17*F*20261120*RCV1", "N1*WH*DALLAS*9*DC1"])))


# ------------------------------------------------------------------------ 947 directions


def test_947_sign_decides_for_codes_without_a_direction():
    events = parse_x12(edi(adjustment("W19*AB*3*EA**SK*A", "W19*AB*-3*EA**SK*B", "W19*AH*0*EA**SK*C")))
    assert [(e.sku, e.reason, e.quantity) for e in events] == [("A", "found", 3), ("B", "lost", 3)]


def test_947_increase_code_with_a_negative_quantity_is_refused():
    with pytest.raises(EdiError, match="W19-02: reason code 56 \\(found, an increase\\) cannot carry the negative"):
        parse_x12(edi(adjustment("W19*56*-2*EA**SK*A")))


def test_947_status_codes_accept_either_sign():
    events = parse_x12(edi(adjustment("W19*05*-3*EA**SK*A", "W19*88*3*EA**SK*A")))
    assert [(e.reason, e.quantity) for e in events] == [("quality_hold", 3), ("quality_release", 3)]


def test_947_partner_reason_overrides():
    options = X12Options(reason_codes={"ZZ": ("damaged", 0)})
    assert parse_x12(edi(adjustment("W19*ZZ*1*EA**SK*A")), options=options)[0].reason == "damaged"


def test_947_needs_an_adjustment_number():
    with pytest.raises(EdiError, match="W15-02: an adjustment number"):
        parse_x12(edi(("947", ["W15*20261120", "N1*WH*X*9*DC1", "W19*AB*1*EA**SK*A"])))


# ------------------------------------------------------------------------ 846 counts


def inventory(*detail, header=("BIA*00*DD*INV1*20261120*0600", "N1*WH*DALLAS*9*DC1")):
    return ("846", [*header, *detail])


def test_846_item_without_an_on_hand_quantity_is_refused():
    with pytest.raises(EdiError, match="item A has no QTY with qualifier 17/33"):
        parse_x12(edi(inventory("LIN**SK*A", "QTY*02*5*EA")))


def test_846_ctt_count_is_checked():
    with pytest.raises(EdiError, match="CTT-01 says 2 line items but the advice has 1"):
        parse_x12(edi(inventory("LIN**SK*A", "QTY*17*5*EA", "CTT*2")))


def test_846_same_item_twice_at_one_location_is_refused():
    with pytest.raises(EdiError, match="item A at DC1 is reported twice"):
        parse_x12(edi(inventory("LIN**SK*A", "QTY*17*5*EA", "LIN**SK*A", "QTY*17*6*EA")))


def test_846_location_per_lin_loop_and_as_of_time_from_bia():
    events = parse_x12(
        edi(inventory("LIN**SK*A", "QTY*17*5*EA", "N1*WH*STORE*9*STORE-12", "LIN**SK*A", "QTY*17*7*EA",
                      header=("BIA*00*DD*INV1*20261120*0615",)),
            ),
        default_location="DC1",
    )
    assert [(e.location, e.quantity) for e in events] == [("STORE-12", 5), ("DC1", 7)]
    assert events[0].occurred_at == datetime(2026, 11, 20, 6, 15, tzinfo=UTC)


def test_846_qty_unit_must_be_eaches():
    with pytest.raises(EdiError, match="QTY-03: unit of measure 'CA'"):
        parse_x12(edi(inventory("LIN**SK*A", "QTY*17*5*CA")))


# ------------------------------------------------------------------------ locations and time


def test_location_map_and_default_location():
    assert parse_x12(edi(("944", RECEIPT)), {"DC1": "DALLAS-DC"})[0].location == "DALLAS-DC"
    with pytest.raises(EdiError, match="N1-04: warehouse code 'DC1' is not in the location map"):
        parse_x12(edi(("944", RECEIPT)), {"DC9": "X"})
    no_party = [s for s in RECEIPT if not s.startswith("N1")]
    with pytest.raises(EdiError, match="no N1 party with entity code WH/ST"):
        parse_x12(edi(("944", no_party)))
    assert parse_x12(edi(("944", no_party)), default_location="DC1")[0].location == "DC1"


def test_times_without_zone_use_the_configured_zone_and_time_codes():
    from zoneinfo import ZoneInfo

    assert parse_x12(edi(("944", RECEIPT)))[0].occurred_at == datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    eastern = parse_x12(edi(("944", RECEIPT)), tz=ZoneInfo("America/New_York"))[0]
    assert eastern.occurred_at == datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    pacific = SHIPMENT[:2] + ["G62*11*20261120*8*1430*PT"] + SHIPMENT[3:]
    assert parse_x12(edi(("945", pacific)))[0].occurred_at == datetime(2026, 11, 20, 22, 30, tzinfo=UTC)
    with pytest.raises(EdiError, match="G62-05: time code 'XX'"):
        parse_x12(edi(("945", SHIPMENT[:2] + ["G62*11*20261120*8*1430*XX"] + SHIPMENT[3:])))


def test_date_only_documents_take_the_group_time_of_that_day_else_midnight():
    no_time = ["W06*N*ORD-1*20261120*SHP-1", "N1*SF*DALLAS*9*DC1", "W12*CC*2*2*0*EA**SK*CAP-RED"]
    same_day = parse_x12(edi(("945", no_time), gs_date="20261120", gs_time="1745"))[0]
    assert same_day.occurred_at == datetime(2026, 11, 20, 17, 45, tzinfo=UTC)
    next_day = parse_x12(edi(("945", no_time), gs_date="20261121", gs_time="0100"))[0]
    assert next_day.occurred_at == datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


def test_per_set_functions_take_an_enveloped_set():
    (interchange,) = parse_interchanges(edi(("944", RECEIPT)))
    (ts,) = list(interchange.transaction_sets())
    assert (ts.code, ts.control_number, interchange.sender_id) == ("944", "0001", "ACME3PL")
    assert [e.quantity for e in parse_944(ts)] == [5]
