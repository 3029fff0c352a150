// MULT18X18D: the ECP5 sysDSP 18x18 multiplier, a behavioural model for simulation.
//
// Written for kindling from Lattice's description of the primitive (FPGA-TN-02205, "ECP5 and ECP5-5G
// sysDSP Usage Guide", MULT18X18D section, and the FPGA Libraries Reference Guide): not Lattice's
// model. The port list and parameter names are the primitive's (the same as Yosys's
// share/ecp5/cells_bb.v), so the Verilog that instantiates the primitive for the bitstream runs
// unchanged against this model.
//
// What is modelled:
// * P = A x B, 36 bits, each operand signed (two's complement) when SIGNEDA / SIGNEDB is high and
//   unsigned otherwise; SIGNEDP = SIGNEDA | SIGNEDB.
// * SOURCEA / SOURCEB choose the parallel input (0) or the shift input SRIA / SRIB (1, the cascade
//   of a neighbouring block; SOURCEB_MODE = "B_SHIFT", the default).
// * Input registers on A (with SIGNEDA and SOURCEA's choice), B (with SIGNEDB) and C, the pipeline
//   register after the multiplier and the output register on P, each on when its REG_*_CLK names
//   a clock (CLK0..CLK3) and bypassed when it is "NONE", with its clock enable (CE0..CE3) and reset
//   (RST0..RST3, synchronous when RESETMODE = "SYNC", asynchronous when "ASYNC") chosen by
//   REG_*_CE / REG_*_RST. A register that resets goes to 0.
// * ROA / ROB / ROC (to an ALU54B) and SROA / SROB (the shift cascade) give the operands after the
//   input registers.
// Not modelled: MULT_BYPASS = "ENABLED", the clock dividers and HIGHSPEED_CLK (CLKn_DIV "ENABLED"
// means no division), GSR (simulation starts from the registers' initial 0), the C_SHIFT and
// dynamic SOURCEB modes. A parameter value outside the modelled set stops the simulation at time 0.
`default_nettype none
module MULT18X18D(
    input wire A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
    input wire B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
    input wire C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
    input wire SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input wire CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0,
    input wire SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8,
    input wire SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0,
    input wire SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8,
    input wire SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0,
    output wire SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8,
    output wire SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0,
    output wire SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8,
    output wire SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0,
    output wire ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8,
    output wire ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0,
    output wire ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8,
    output wire ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0,
    output wire ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8,
    output wire ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0,
    output wire P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
    output wire P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0,
    output wire SIGNEDP
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    wire [3:0] clk = {CLK3, CLK2, CLK1, CLK0};
    wire [3:0] ce = {CE3, CE2, CE1, CE0};
    wire [3:0] rst = {RST3, RST2, RST1, RST0};

    // "CLKn" / "CEn" / "RSTn" -> n; "NONE" -> -1.
    function integer sel(input [8*8-1:0] name);
        begin
            if (name == "NONE") sel = -1;
            else if (name == "CLK0" || name == "CE0" || name == "RST0") sel = 0;
            else if (name == "CLK1" || name == "CE1" || name == "RST1") sel = 1;
            else if (name == "CLK2" || name == "CE2" || name == "RST2") sel = 2;
            else if (name == "CLK3" || name == "CE3" || name == "RST3") sel = 3;
            else sel = -2;
        end
    endfunction

    localparam integer A_CLK = sel(REG_INPUTA_CLK), A_CE = sel(REG_INPUTA_CE), A_RST = sel(REG_INPUTA_RST);
    localparam integer B_CLK = sel(REG_INPUTB_CLK), B_CE = sel(REG_INPUTB_CE), B_RST = sel(REG_INPUTB_RST);
    localparam integer C_CLK = sel(REG_INPUTC_CLK), C_CE = sel(REG_INPUTC_CE), C_RST = sel(REG_INPUTC_RST);
    localparam integer M_CLK = sel(REG_PIPELINE_CLK), M_CE = sel(REG_PIPELINE_CE), M_RST = sel(REG_PIPELINE_RST);
    localparam integer O_CLK = sel(REG_OUTPUT_CLK), O_CE = sel(REG_OUTPUT_CE), O_RST = sel(REG_OUTPUT_RST);
    localparam ASYNC = (RESETMODE == "ASYNC");

    initial begin
        if (A_CLK < -1 || B_CLK < -1 || C_CLK < -1 || M_CLK < -1 || O_CLK < -1 ||
            A_CE < 0 || B_CE < 0 || C_CE < 0 || M_CE < 0 || O_CE < 0 ||
            A_RST < 0 || B_RST < 0 || C_RST < 0 || M_RST < 0 || O_RST < 0) begin
            $display("MULT18X18D model: a REG_*_CLK/CE/RST parameter names no CLK/CE/RST 0..3 (or NONE)");
            $finish;
        end
        if (MULT_BYPASS != "DISABLED" || SOURCEB_MODE != "B_SHIFT" || !(RESETMODE == "SYNC" || ASYNC)) begin
            $display("MULT18X18D model: MULT_BYPASS=%0s SOURCEB_MODE=%0s RESETMODE=%0s not modelled",
                     MULT_BYPASS, SOURCEB_MODE, RESETMODE);
            $finish;
        end
    end

    wire [17:0] a_in = SOURCEA ? {SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8,
                                  SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0}
                               : {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = SOURCEB ? {SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8,
                                  SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0}
                               : {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    wire [17:0] c_in = {C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0};

    // The input stage: A with its sign, B with its sign, C.
    wire [18:0] a_q, b_q;
    wire [17:0] c_q;
    MULT18X18D_stage #(.W(19), .CLK(A_CLK), .CE(A_CE), .RST(A_RST), .ASYNC(ASYNC)) reg_a (
        .clk(clk), .ce(ce), .rst(rst), .d({SIGNEDA, a_in}), .q(a_q));
    MULT18X18D_stage #(.W(19), .CLK(B_CLK), .CE(B_CE), .RST(B_RST), .ASYNC(ASYNC)) reg_b (
        .clk(clk), .ce(ce), .rst(rst), .d({SIGNEDB, b_in}), .q(b_q));
    MULT18X18D_stage #(.W(18), .CLK(C_CLK), .CE(C_CE), .RST(C_RST), .ASYNC(ASYNC)) reg_c (
        .clk(clk), .ce(ce), .rst(rst), .d(c_in), .q(c_q));

    // The multiplier: each operand extended to 36 bits by its sign (signed) or zeros (unsigned).
    wire [35:0] a_ext = {{18{a_q[18] & a_q[17]}}, a_q[17:0]};
    wire [35:0] b_ext = {{18{b_q[18] & b_q[17]}}, b_q[17:0]};
    wire [35:0] product = a_ext * b_ext;
    wire signed_p = a_q[18] | b_q[18];

    wire [36:0] m_q, o_q;
    MULT18X18D_stage #(.W(37), .CLK(M_CLK), .CE(M_CE), .RST(M_RST), .ASYNC(ASYNC)) reg_m (
        .clk(clk), .ce(ce), .rst(rst), .d({signed_p, product}), .q(m_q));
    MULT18X18D_stage #(.W(37), .CLK(O_CLK), .CE(O_CE), .RST(O_RST), .ASYNC(ASYNC)) reg_o (
        .clk(clk), .ce(ce), .rst(rst), .d(m_q), .q(o_q));

    assign {SIGNEDP, P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
            P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = o_q;
    assign {ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8,
            ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0} = a_q[17:0];
    assign {SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8,
            SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0} = a_q[17:0];
    assign {ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8,
            ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0} = b_q[17:0];
    assign {SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8,
            SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0} = b_q[17:0];
    assign {ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8,
            ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0} = c_q;
endmodule

// One optional register of the block: bypassed when CLK < 0, else on clk[CLK] with ce[CE], reset to 0
// by rst[RST] (synchronously, or asynchronously with ASYNC).
module MULT18X18D_stage #(parameter integer W = 1, parameter integer CLK = -1, parameter integer CE = 0,
                          parameter integer RST = 0, parameter ASYNC = 0) (
    input wire [3:0] clk, ce, rst,
    input wire [W-1:0] d,
    output wire [W-1:0] q
);
    generate
        if (CLK < 0) begin : bypass
            assign q = d;
        end else begin : register
            reg [W-1:0] r = {W{1'b0}};
            wire c = clk[CLK];
            wire arst = ASYNC ? rst[RST] : 1'b0;
            always @(posedge c or posedge arst) begin
                if (arst) r <= {W{1'b0}};
                else if (!ASYNC && rst[RST]) r <= {W{1'b0}};
                else if (ce[CE]) r <= d;
            end
            assign q = r;
        end
    endgenerate
endmodule
`default_nettype wire
